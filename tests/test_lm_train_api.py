"""gradclip.lm.train / resume as functions: the RunResult agrees with the run
directory, a Corpus object can be passed, bad input raises UserError before
anything is written."""

from __future__ import annotations

import dataclasses
import io
import math

import pytest
import torch

from gradclip.errors import UserError
from gradclip.lm import Corpus, RunOptions, load_config, load_corpus, read_run, resume, train

QUIET = RunOptions(device="cpu", progress=False, tensorboard=False, handle_signals=False)


@pytest.fixture
def cfg():
    base, _ = load_config("test")
    return dataclasses.replace(base, hidden_size=6, max_max_epoch=2)


def test_result_matches_the_run_directory(corpus, tmp_path, cfg, one_thread):
    out = io.StringIO()
    data = load_corpus(corpus, vocab_size=cfg.vocab_size)
    result = train(cfg, data, tmp_path / "r", options=dataclasses.replace(QUIET, out=out))
    run = read_run(tmp_path / "r")
    assert run.summary is not None and run.status == result.status == "finished"
    assert result.exit_status == 0 and result.run_dir == tmp_path / "r"
    rows = run.metrics()
    assert result.steps == len(rows) == run.summary["global_step"]
    assert result.epochs == 2 and result.history == run.summary["epochs"]
    assert result.train_ppl == run.summary["epochs"][-1]["train_ppl"]
    assert result.valid_ppl == run.summary["epochs"][-1]["valid_ppl"]
    assert result.test_ppl == run.summary["test_ppl"] and result.test_ppl > 1
    assert result.clip_rate == pytest.approx(sum(r["clipped"] for r in rows) / len(rows))
    # train ppl of the last epoch = exp(mean per-token loss over its steps), T = 2
    last = [r["loss"] for r in rows if r["epoch"] == 2]
    assert result.train_ppl == pytest.approx(math.exp(sum(last) / (2 * len(last))), rel=1e-5)
    assert "test ppl" in out.getvalue()
    assert run.info["data"] == str(corpus.resolve()) and run.info["data_prefix"] == "ptb."
    again = resume(tmp_path / "r", options=dataclasses.replace(QUIET, out=out))
    assert (again.status, again.steps, again.test_ppl) == (
        "finished",
        result.steps,
        result.test_ppl,
    )


def test_stop_after_then_resume(corpus, tmp_path, cfg, one_thread):
    opts = dataclasses.replace(QUIET, out=io.StringIO(), stop_after=17)
    first = train(cfg, corpus, tmp_path / "r", options=opts)
    assert (first.status, first.steps, first.stop_reason) == (
        "stopped",
        17,
        "stopped after 17 steps",
    )
    assert first.exit_status == 0 and first.test_ppl is None
    done = resume(tmp_path / "r", options=dataclasses.replace(QUIET, out=io.StringIO()))
    assert done.status == "finished" and done.steps > 17


def test_bad_input_raises_user_error_and_writes_nothing(corpus, tmp_path, cfg):
    bad = [
        (dataclasses.replace(cfg, clip="nrom"), "did you mean 'norm'"),
        (dataclasses.replace(cfg, learning_rate=-1.0), "learning_rate must be positive"),
        (dataclasses.replace(cfg, batch_size=5000), "too small"),
    ]
    for config, message in bad:
        with pytest.raises(UserError, match=message):
            train(config, corpus, tmp_path / "r", options=QUIET)
        assert not (tmp_path / "r").exists()


def test_stop_after_already_reached_does_no_step(corpus, tmp_path, cfg, one_thread):
    opts = dataclasses.replace(QUIET, out=io.StringIO(), stop_after=12)
    assert train(cfg, corpus, tmp_path / "r", options=opts).steps == 12
    again = resume(tmp_path / "r", options=dataclasses.replace(opts, stop_after=5))
    assert (again.status, again.steps) == ("stopped", 12)
    assert len(read_run(tmp_path / "r").metrics()) == 12


def test_in_memory_corpus_trains_and_resumes(tmp_path, cfg, one_thread):
    g = torch.Generator().manual_seed(0)
    ids = {
        s: torch.randint(0, 12, (n,), generator=g)
        for s, n in (("train", 900), ("valid", 300), ("test", 50))
    }
    corpus = Corpus(
        [f"s{i}" for i in range(12)], ids["train"], ids["valid"], ids["test"], {}, {}, "word"
    )
    opts = dataclasses.replace(QUIET, out=io.StringIO(), stop_after=7)
    assert train(cfg, corpus, tmp_path / "r", options=opts).status == "stopped"
    with pytest.raises(UserError, match="in-memory corpus: pass it again"):
        resume(tmp_path / "r", options=QUIET)
    done = resume(
        tmp_path / "r", data=corpus, options=dataclasses.replace(QUIET, out=io.StringIO())
    )
    assert done.status == "finished" and read_run(tmp_path / "r").info["data"] is None
