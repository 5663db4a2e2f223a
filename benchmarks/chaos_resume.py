"""Chaos test of exact resume: kill ``gradclip train`` with SIGKILL at random
moments, resume, and count how many resumed runs are identical to an
uninterrupted one.

Each trial starts the run in a subprocess and kills it ``--kills`` times, each
time at a random step from the last one recorded on (``0``: right after the run
directory appears, before the first step; a step the killed process already
recorded: during the resume's start-up), resuming after every kill with
``gradclip train --resume``;
the last resume runs to the end. A trial is *identical* when its
``metrics.jsonl`` equals the reference run's byte for byte, and its epoch
records (timings aside) and test perplexity are equal. Everything runs on a
generated corpus with the ``test`` config (dropout on, so the RNG state counts).

Run: ``.venv/bin/python benchmarks/chaos_resume.py --trials 20 --kills 3``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = ["train", "--config", "test", "--no-progress", "--threads", "1"]
OPTS = ["--max-max-epoch", "3", "--keep-prob", "0.6", "--hidden-size", "8", "--num-layers", "2"]


def write_corpus(root: Path, seed: int = 0) -> Path:
    """A Markov-chain corpus of 40 words in Mikolov format."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(40)]
    nxt = {w: rng.sample(words, 4) for w in words}
    root.mkdir(parents=True)
    for split, n in (("train", 3000), ("valid", 600), ("test", 400)):
        w, out = rng.choice(words), []
        for i in range(n):
            out.append(w + ("\n" if i % 9 == 8 else " "))
            w = rng.choice(nxt[w])
        (root / f"ptb.{split}.txt").write_text("".join(out) + "\n")
    return root


def gradclip(*args: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "gradclip", *args]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def steps_done(run: Path) -> int:
    try:
        return (run / "metrics.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def kill_at(proc: subprocess.Popen[bytes], run: Path, step: int) -> bool:
    """SIGKILL ``proc`` once ``step`` metrics rows exist (0: once the run directory does).

    Returns:
        False if the process ended before.
    """
    while proc.poll() is None:
        if (run / "checkpoint.pt").exists() and steps_done(run) >= step:
            proc.kill()
            proc.wait()
            return True
        time.sleep(0.001)
    return False


def outcome(run: Path) -> tuple[str, list[dict[str, object]], object]:
    summary = json.loads((run / "summary.json").read_text())
    timing = ("seconds", "wps")
    epochs = [{k: v for k, v in e.items() if k not in timing} for e in summary["epochs"]]
    return (run / "metrics.jsonl").read_text(), epochs, summary["test_ppl"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=20, help="runs to kill and resume")
    ap.add_argument("--kills", type=int, default=3, help="kills per trial")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["GRADCLIP_CACHE_DIR"] = str(root / "cache")
        data = write_corpus(root / "data")
        ref = root / "reference"
        proc = gradclip(*TRAIN, "--data", str(data), "--run-dir", str(ref), *OPTS)
        assert proc.wait() == 0, proc.stderr.read() if proc.stderr else ""
        total = steps_done(ref)
        expected = outcome(ref)
        identical, kills, points = 0, 0, []
        for t in range(args.trials):
            run = root / f"trial{t}"
            argv = [*TRAIN, "--data", str(data), "--run-dir", str(run), *OPTS]
            argv += ["--flush-every", "1"]
            for _ in range(args.kills):
                step = rng.randint(min(steps_done(run), total - 1), total - 1)
                proc = gradclip(*argv)
                if kill_at(proc, run, step):
                    kills += 1
                    points.append(step)
                argv = ["train", "--resume", str(run), "--no-progress", "--threads", "1"]
            proc = gradclip(*argv)
            code = proc.wait()
            same = code == 0 and outcome(run) == expected
            identical += same
            print(f"trial {t + 1}: killed at steps {points[-args.kills :]}; identical: {same}")
        print(
            f"{identical}/{args.trials} resumed runs identical to the uninterrupted run "
            f"({kills} SIGKILLs at steps 0..{total}, {total} steps per run, "
            f"{sum(p < total // 3 for p in points)} of them in the first epoch)"
        )
    return 0 if identical == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
