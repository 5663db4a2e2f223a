"""gradclip.lm.rundir: atomic creation, strict JSON, the vocabulary file, checkpoint
and run-record errors, stale temporary files."""

from __future__ import annotations

import json
import math
import os
import random

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from gradclip.errors import UserError
from gradclip.lm import rundir
from gradclip.lm.rundir import (
    clean_stale_temp,
    create_run,
    decode_vocab,
    default_run_dir,
    encode_vocab,
    load_checkpoint,
    read_metrics,
    save_checkpoint,
    strict_json,
    truncate_metrics,
    write_json,
)


@given(st.lists(st.text(min_size=1), min_size=1))
def test_vocab_round_trips_every_symbol(vocab):
    text = encode_vocab(vocab)
    assert text.count("\n") == len(vocab)  # one line per symbol, whatever the symbol
    assert decode_vocab(text) == vocab


def test_vocab_file_has_no_raw_line_breaks(tmp_path):
    vocab = ["\r", "\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\\u000d", "a b", "é"]
    path = tmp_path / "vocab.txt"
    path.write_bytes(encode_vocab(vocab).encode("utf-8"))
    assert len(path.read_text(encoding="utf-8").splitlines()) == len(vocab)
    assert decode_vocab(path.read_bytes().decode("utf-8")) == vocab


def test_strict_json_has_no_nan_or_infinity(tmp_path):
    value = {"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": {"d": 2}, "e": (1, math.nan)}
    path = tmp_path / "x.json"
    write_json(path, value)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [None, None, 1.5], "c": {"d": 2}, "e": [1, None]}
    assert strict_json(3) == 3


def test_create_run_is_atomic(tmp_path):
    target = tmp_path / "runs" / "r"
    with pytest.raises(TypeError):  # the second file cannot be written
        create_run(target, {"a.txt": "x", "b.txt": object()})  # type: ignore[dict-item]
    assert not target.exists()
    assert os.listdir(tmp_path / "runs") == []
    create_run(target, {"a.txt": "x", "b.bin": b"\x00"})
    assert sorted(os.listdir(target)) == ["a.txt", "b.bin"]
    with pytest.raises(UserError, match="run directory exists and is not empty"):
        create_run(target, {"a.txt": "y"})
    assert (target / "a.txt").read_text() == "x"


def test_create_run_removes_a_killed_create(tmp_path):
    stale = tmp_path / ".r.abc123.tmp"
    stale.mkdir()
    (stale / "config.toml").write_text("half")
    create_run(tmp_path / "r", {"a": "x"})
    assert sorted(os.listdir(tmp_path)) == ["r"]


def test_default_run_dirs_never_collide():
    names = {default_run_dir("small") for _ in range(200)}  # same second, mostly
    assert len(names) == 200
    assert all(p.parent.name == "runs" and p.name.startswith("small-") for p in names)


def test_clean_stale_temp_removes_only_temporary_files(tmp_path):
    for name in (".checkpoint.pt.x1.tmp", ".metrics.jsonl.y.tmp", "keep.tmp", "checkpoint.pt"):
        (tmp_path / name).write_text("")
    removed = clean_stale_temp(tmp_path)
    assert sorted(p.name for p in removed) == [".checkpoint.pt.x1.tmp", ".metrics.jsonl.y.tmp"]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt", "keep.tmp"]


@pytest.fixture
def checkpoint(tmp_path):
    return save_checkpoint(tmp_path, {"format": 2, "config": {}, "model": {"w": torch.ones(300)}})


def test_checkpoint_round_trip(checkpoint):
    blob = load_checkpoint(checkpoint)
    assert torch.equal(blob["model"]["w"], torch.ones(300))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("empty", "is empty"),
        ("truncated", "truncated or not a gradclip checkpoint"),
        ("random", "truncated or not a gradclip checkpoint"),
        ("foreign", "not a gradclip train checkpoint"),
        ("missing", "checkpoint not found"),
    ],
)
def test_damaged_checkpoints_give_one_line_naming_the_file(checkpoint, damage, message):
    data = checkpoint.read_bytes()
    if damage == "empty":
        checkpoint.write_bytes(b"")
    elif damage == "truncated":
        checkpoint.write_bytes(data[: len(data) // 2])
    elif damage == "random":
        checkpoint.write_bytes(random.Random(0).randbytes(4000))
    elif damage == "foreign":
        torch.save({"weights": torch.zeros(2)}, checkpoint)
    else:
        checkpoint.unlink()
    with pytest.raises(UserError, match=message) as info:
        load_checkpoint(checkpoint)
    assert str(checkpoint) in str(info.value) and "\n" not in str(info.value)


def test_metrics_reader_and_truncation(tmp_path):
    path = tmp_path / rundir.METRICS_FILE
    path.write_text('{"step": 1, "loss": null}\n{"step": 2, "loss": 1.0}\n{"step": 3, "lo')
    assert read_metrics(path) == [{"step": 1, "loss": None}, {"step": 2, "loss": 1.0}]
    truncate_metrics(path, 1)
    assert path.read_text() == '{"step": 1, "loss": null}\n'
    assert read_metrics(tmp_path / "none.jsonl") == []


def test_files_and_directories_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        run = create_run(tmp_path / "r", {"a.txt": "x"})
        write_json(run / "s.json", {"a": 1})
        save_checkpoint(run, {"config": {}, "model": {}})
    finally:
        os.umask(old)
    assert run.stat().st_mode & 0o777 == 0o755
    for name in ("a.txt", "s.json", "checkpoint.pt"):
        assert (run / name).stat().st_mode & 0o777 == 0o644, name
