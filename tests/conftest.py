"""Test configuration: deterministic hypothesis examples in CI, random ones elsewhere;
shared fixtures (one thread, tiny generated corpora, a private corpus cache)."""

import importlib.util
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

#: The symbols of the generated corpora.
WORDS = [f"w{i}" for i in range(40)]


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and on a shared machine a 2-thread
    parallel region can wait a whole time slice for its second core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _corpus_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Token-stream caches go to the test's own directory, never to ~/.cache."""
    monkeypatch.setenv("GRADCLIP_CACHE_DIR", str(tmp_path / "cache"))


def _make_corpus(root: Path, n_train: int = 3000, seed: int = 0) -> Path:
    """A small Markov-chain corpus in Mikolov format (lines begin and end with a space)."""
    rng = random.Random(seed)
    nxt = {w: rng.sample(WORDS, 4) for w in WORDS}

    def text(n: int) -> str:
        lines, words, w = [], [], rng.choice(WORDS)
        for _ in range(n):
            words.append(w)
            if len(words) >= rng.randint(5, 12):
                lines.append(" " + " ".join(words) + " ")
                words = []
            w = rng.choice(nxt[w])
        if words:
            lines.append(" " + " ".join(words) + " ")
        return "\n".join(lines) + "\n"

    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("valid", 600), ("test", 400)):
        (root / f"ptb.{name}.txt").write_text(text(n), encoding="utf-8")
    return root


@pytest.fixture
def make_corpus() -> Callable[..., Path]:
    """``make_corpus(root, n_train=3000, seed=0)`` writes a tiny corpus into ``root``."""
    return _make_corpus


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A tiny generated corpus (84 steps per epoch with the ``test`` config)."""
    return _make_corpus(tmp_path / "data")


def _load_benchmark(name: str) -> ModuleType:
    path = Path(__file__).parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_benchmark() -> Callable[[str], ModuleType]:
    """Imports ``benchmarks/NAME.py`` (not a package) as a module, for its tests."""
    return _load_benchmark
