"""Data: the tutorial's vocabulary, ptb_producer batching, cache, bad input."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
import torch

from gradclip.lm import data as lmdata
from gradclip.lm.batches import Batches, batchify, check_epoch_size, epoch_size
from gradclip.lm.data import (
    EOS,
    UNK,
    DataError,
    build_vocab,
    find_files,
    load_corpus,
    tokenize,
)

# The PTB files sit in ../shared beside the checkout (CI and the project's machines).
PTB = next(
    (
        d
        for d in (
            Path(os.environ.get("GRADCLIP_PTB_DIR", "/nonexistent")),
            Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb",
            Path("/work/shared/data/ptb"),
        )
        if (d / "ptb.train.txt").exists()
    ),
    Path("/work/shared/data/ptb"),
)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADCLIP_CACHE_DIR", str(tmp_path / "cache"))


def write_corpus(root: Path, train: str, valid: str, test: str, prefix: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in (("train", train), ("valid", valid), ("test", test)):
        (root / f"{prefix}{name}.txt").write_text(text, encoding="utf-8")
    return root


# --------------------------------------------------------------------------- vocabulary
def test_vocab_order_is_minus_count_then_word():
    # Hand count of " b a c \n a b a \n": a=3, b=2, <eos>=2, c=1.
    # Sorted by (-count, word): a(3), then the ties at 2 in string order:
    # "<eos>" < "b" because "<" (0x3C) sorts before "b" (0x62); then c.
    words = tokenize(" b a c \n a b a \n")
    assert words == ["b", "a", "c", EOS, "a", "b", "a", EOS]
    assert build_vocab(Counter(words)) == ["a", EOS, "b", "c"]


def test_vocab_ties_are_broken_by_the_word_not_by_first_occurrence():
    assert build_vocab(Counter(["z", "y", "x"])) == ["x", "y", "z"]


def test_vocab_is_built_from_train_only(tmp_path):
    root = write_corpus(tmp_path / "d", " a a b \n", " b b b b \n", " a \n")
    corpus = load_corpus(root)
    assert corpus.vocab == ["a", EOS, "b"]  # a=2, <eos>=1, b=1: train counts only
    assert corpus.valid.tolist() == [2, 2, 2, 2, 1]


def test_vocab_cap_maps_the_rest_to_unk(tmp_path):
    # train counts (no newline, so no <eos>): a=4 b=3 c=2 d=1. A cap of 3 keeps a, b
    # and adds <unk> with count c + d = 3, which ties with b; "<unk>" < "b".
    root = write_corpus(tmp_path / "d", "a a a a b b b c c d", "a d e", "b")
    corpus = load_corpus(root, vocab_size=3)
    assert corpus.vocab == ["a", UNK, "b"]
    assert corpus.train.tolist() == [0, 0, 0, 0, 2, 2, 2, 1, 1, 1]
    assert corpus.valid.tolist() == [0, 1, 1]
    # Under the cap, but valid has "e": a, b, c, d keep their ids, <unk> (count 0) last.
    corpus = load_corpus(root, vocab_size=10)
    assert corpus.vocab == ["a", "b", "c", "d", UNK]
    assert corpus.valid.tolist() == [0, 3, 4]


def test_unknown_held_out_words_map_to_an_added_unk(tmp_path):
    root = write_corpus(tmp_path / "d", "a a b", "a z", "b")
    corpus = load_corpus(root)
    assert corpus.vocab == ["a", "b", UNK]
    assert corpus.valid.tolist() == [0, 2]


def test_word_tokens_do_not_glue_across_lines():
    assert tokenize("x\ny") == ["x", EOS, "y"]
    # the tutorial's replace("\n", "<eos>") gives the same tokens on PTB-style lines
    line = " a b \n c \n"
    assert tokenize(line) == line.replace("\n", EOS).split()


def test_char_tokens(tmp_path):
    assert tokenize("ab c\nd", "char") == ["a", "b", " ", "c", EOS, "d"]
    root = write_corpus(tmp_path / "d", "abca\n", "ab\n", "ca\n")
    corpus = load_corpus(root, tokens="char")
    assert corpus.vocab == ["a", EOS, "b", "c"]
    assert corpus.test.tolist() == [3, 0, 1]


def test_ptb_char_style_files_load_with_a_prefix(tmp_path):
    root = write_corpus(tmp_path / "d", " a _ b \n b _ a \n", " a \n", " b \n", prefix="ptb.char.")
    corpus = load_corpus(root, prefix="ptb.char.")
    assert corpus.vocab == [EOS, "_", "a", "b"]  # all count 2: string order


def test_file_discovery_prefers_ptb_names(tmp_path):
    root = write_corpus(tmp_path / "d", "a", "a", "a", prefix="ptb.")
    assert find_files(root)["train"].name == "ptb.train.txt"
    root2 = write_corpus(tmp_path / "e", "a", "a", "a")
    assert find_files(root2)["valid"].name == "valid.txt"


@pytest.mark.skipif(not (PTB / "ptb.train.txt").exists(), reason="PTB data not present")
def test_ptb_vocabulary_matches_the_reference():
    corpus = load_corpus(PTB)
    assert corpus.vocab_size == 10000
    assert corpus.vocab[:4] == ["the", UNK, EOS, "N"]
    assert [corpus.train.numel(), corpus.valid.numel(), corpus.test.numel()] == [
        929589,
        73760,
        82430,
    ]
    counts = torch.bincount(corpus.train.long(), minlength=4)[:4].tolist()
    assert counts == [50770, 45020, 42068, 32481]
    # Step counts of the reference's table.
    assert epoch_size(929589, 20, 20) == 2323
    assert epoch_size(929589, 20, 35) == 1327
    assert epoch_size(73760, 20, 20) == 184
    assert epoch_size(82430, 1, 1) == 82429


@pytest.mark.skipif(not (PTB / "ptb.char.train.txt").exists(), reason="PTB data not present")
def test_ptb_char_files_load():
    corpus = load_corpus(PTB, prefix="ptb.char.")
    assert corpus.valid.numel() == 389672 + 3370  # symbols + one <eos> per line


# --------------------------------------------------------------------------- batching
def test_batchify_hand_worked():
    # N = 11, B = 3: batch_len 3, rows are contiguous stripes, ids 9 and 10 dropped.
    assert batchify(torch.arange(11), 3).tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


def test_ptb_producer_hand_worked():
    # N = 20, B = 2, T = 3: data = [[0..9], [10..19]], batch_len 10,
    # epoch_size = (10 - 1) // 3 = 3.
    b = Batches(torch.arange(20), batch_size=2, num_steps=3)
    assert len(b) == 3
    xs = [x.t().tolist() for x, _ in b]
    ys = [y.t().tolist() for _, y in b]
    assert xs == [
        [[0, 1, 2], [10, 11, 12]],
        [[3, 4, 5], [13, 14, 15]],
        [[6, 7, 8], [16, 17, 18]],
    ]
    assert ys == [
        [[1, 2, 3], [11, 12, 13]],
        [[4, 5, 6], [14, 15, 16]],
        [[7, 8, 9], [17, 18, 19]],
    ]


def test_batches_are_deterministic_not_shuffled():
    ids = torch.randint(0, 50, (1000,))
    a = [x.clone() for x, _ in Batches(ids, 4, 5)]
    b = [x.clone() for x, _ in Batches(ids, 4, 5)]
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_epoch_size_zero_is_an_error():
    assert epoch_size(40, 20, 1) == 1
    assert epoch_size(39, 20, 1) == 0
    with pytest.raises(DataError, match="decrease batch_size or num_steps"):
        check_epoch_size("train", 39, 20, 1)


# --------------------------------------------------------------------------- cache
def test_second_load_uses_the_cache(tmp_path, monkeypatch):
    root = write_corpus(tmp_path / "d", " a b a \n", " a \n", " b \n")
    first = load_corpus(root)
    assert not first.from_cache

    def boom(*args, **kwargs):
        raise AssertionError("re-tokenised")

    monkeypatch.setattr(lmdata, "tokenize", boom)
    second = load_corpus(root)
    assert second.from_cache
    assert second.vocab == first.vocab
    assert torch.equal(second.train, first.train)
    files = list((tmp_path / "cache" / "lm").iterdir())
    assert len(files) == 1 and files[0].suffix == ".pt"  # no temp file left


def test_cache_key_changes_with_content_and_settings(tmp_path):
    root = write_corpus(tmp_path / "d", " a b a \n", " a \n", " b \n")
    load_corpus(root)
    load_corpus(root, tokens="char")
    (root / "train.txt").write_text(" a b b \n", encoding="utf-8")
    corpus = load_corpus(root)
    assert not corpus.from_cache
    assert corpus.vocab[0] == "b"
    assert len(list((tmp_path / "cache" / "lm").iterdir())) == 3


# --------------------------------------------------------------------------- bad input
def test_invalid_utf8_names_file_and_offset(tmp_path):
    root = write_corpus(tmp_path / "d", "ok", "ok", "ok")
    (root / "valid.txt").write_bytes(b"abc \xff def")
    with pytest.raises(DataError, match=r"valid\.txt: invalid UTF-8 at byte offset 4"):
        load_corpus(root)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="data directory not found"):
        load_corpus(tmp_path / "nope")
    root = write_corpus(tmp_path / "d", "a", "a", "a")
    (root / "test.txt").unlink()
    with pytest.raises(DataError, match=r"test file not found: .*test\.txt"):
        load_corpus(root)
    (root / "test.txt").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match=r"test file is empty: .*test\.txt"):
        load_corpus(root)
    (root / "test.txt").write_text(" \n\n ", encoding="utf-8")
    corpus = load_corpus(root)  # newlines are tokens (<eos>)
    assert corpus.test.numel() == 2
    (root / "test.txt").write_text("   ", encoding="utf-8")
    with pytest.raises(DataError, match="test file has no tokens"):
        load_corpus(root)
    with pytest.raises(DataError, match="no training file"):
        load_corpus(tmp_path)


def test_unreadable_file_is_a_data_error(tmp_path, monkeypatch):
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").write_text("a b\n")
    read_bytes = Path.read_bytes

    def deny(self):  # as for a file without read permission (the suite may run as root)
        if self.name == "valid.txt":
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(DataError, match=r"cannot read .*valid\.txt: Permission denied"):
        load_corpus(tmp_path)
