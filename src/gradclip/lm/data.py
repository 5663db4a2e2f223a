"""Corpora: Mikolov-format PTB and plain-text directories, the tutorial's vocabulary
and a token-stream cache (batching is :mod:`gradclip.lm.batches`).

Tokenisation (``tokens="word"``) is the tutorial's ``reader._read_words``: every
newline becomes ``<eos>`` and the text is split on whitespace. (The tutorial
replaces ``"\\n"`` by ``"<eos>"``; we replace it by ``" <eos> "``, which gives the
same tokens on PTB, whose lines begin and end with a space, and does not glue
words together in corpora whose lines do not.) ``tokens="char"`` makes every
character a token, again with ``<eos>`` for each newline. The character-level
PTB files (``ptb.char.*.txt``) are already space-separated symbols and load
with ``tokens="word"`` and ``prefix="ptb.char."``.

The vocabulary is built from the training split only and sorted by
(−count, word), the ids being the ranks, exactly as ``reader._build_vocab``.
On PTB this gives the tutorial's 10,000 ids (``the``=0, ``<unk>``=1, ``<eos>``=2).
For other corpora, ``vocab_size`` caps it: the most frequent ``vocab_size − 1``
types are kept and the rest map to ``<unk>``, whose count is its own plus the
dropped ones. ``<unk>`` is added only when it is needed (the cap is hit, or valid
or test holds a type train lacks); the tutorial drops such tokens instead, a case
that never arises on PTB.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gradclip.errors import UserError
from gradclip.lm.files import atomic_write_bytes

EOS = "<eos>"
UNK = "<unk>"
SPLITS = ("train", "valid", "test")
TOKEN_MODES = ("word", "char")
CACHE_VERSION = 1


class DataError(UserError):
    """A problem with the input corpus that the user can fix (a
    :class:`~gradclip.errors.UserError`: one line, exit status 2 from the CLI).

    Example:
        >>> try:
        ...     find_files("/nonexistent/corpus")
        ... except DataError as exc:
        ...     print(exc)
            data directory not found: /nonexistent/corpus
    """


@dataclass
class Corpus:
    """The three token-id streams of a corpus and its vocabulary.

    Attributes:
        vocab: the symbols, id order.
        train: int32 ids of the training split (likewise ``valid``, ``test``).
        files: split → file path.
        sha256: split → SHA-256 of the file's bytes.
        tokens: ``"word"`` or ``"char"``.
        from_cache: whether the streams came from the token cache.

    Example:
        >>> c = Corpus(["a", "b"], torch.tensor([0, 1]), torch.tensor([1]), torch.tensor([0]),
        ...            {}, {}, "word")
        >>> c.vocab_size, c.split("valid").tolist()
            (2, [1])
    """

    vocab: list[str]
    train: Tensor
    valid: Tensor
    test: Tensor
    files: dict[str, str]
    sha256: dict[str, str]
    tokens: str
    from_cache: bool = False

    @property
    def vocab_size(self) -> int:
        """V, the number of symbols."""
        return len(self.vocab)

    def split(self, name: str) -> Tensor:
        """The ids of split ``name`` (``train``, ``valid`` or ``test``).

        Args:
            name: the split.

        Returns:
            Its id stream.
        """
        stream: Tensor = getattr(self, name)
        return stream


# --------------------------------------------------------------------------- files
def find_files(data_dir: str | os.PathLike[str], prefix: str | None = None) -> dict[str, Path]:
    """The train/valid/test files of ``data_dir``.

    With ``prefix=None`` the Mikolov names ``ptb.{split}.txt`` are used when
    ``ptb.train.txt`` exists, and ``{split}.txt`` otherwise. Any other prefix
    names the files ``{prefix}{split}.txt`` (e.g. ``"ptb.char."``).

    Args:
        data_dir: the corpus directory.
        prefix: the file-name prefix, or ``None`` to detect it.

    Returns:
        split → path; a missing, empty or non-file path raises :class:`DataError`.
    """
    root = Path(data_dir)
    if not root.exists():
        raise DataError(f"data directory not found: {root}")
    if not root.is_dir():
        raise DataError(f"data path is not a directory: {root}")
    if prefix is None:
        prefix = "ptb." if (root / "ptb.train.txt").exists() else ""
        if not prefix and not (root / "train.txt").exists():
            raise DataError(f"no training file in {root}: expected ptb.train.txt or train.txt")
    files = {s: root / f"{prefix}{s}.txt" for s in SPLITS}
    for s, path in files.items():
        if not path.exists():
            raise DataError(f"{s} file not found: {path}")
        if not path.is_file():
            raise DataError(f"{s} path is not a file: {path}")
        if path.stat().st_size == 0:
            raise DataError(f"{s} file is empty: {path}")
    return files


def tokenize(text: str, tokens: str = "word") -> list[str]:
    """The tutorial's ``_read_words`` (``word``), or one token per character (``char``).

    Args:
        text: the file's text.
        tokens: ``"word"`` or ``"char"``.

    Returns:
        The tokens, ``<eos>`` for each newline.

    Example:
        >>> tokenize(" a b \\n c \\n")
        ['a', 'b', '<eos>', 'c', '<eos>']
        >>> tokenize("ab\\nc", "char")
        ['a', 'b', '<eos>', 'c']
    """
    if tokens == "word":
        return text.replace("\n", f" {EOS} ").split()
    if tokens == "char":
        out: list[str] = []
        for i, line in enumerate(text.split("\n")):
            if i:
                out.append(EOS)
            out.extend(line)
        return out
    raise DataError(f"tokens must be one of {', '.join(TOKEN_MODES)}, got {tokens!r}")


def build_vocab(
    counts: Counter[str], vocab_size: int | None = None, need_unk: bool = False
) -> list[str]:
    """Words sorted by (−count, word); capped at ``vocab_size`` with ``<unk>``.

    Args:
        counts: training-split token counts.
        vocab_size: the cap, or ``None``.
        need_unk: add ``<unk>`` even below the cap (held-out types train lacks).

    Returns:
        The vocabulary, id order.

    Example:
        >>> build_vocab(Counter("b a c a b a".split()))
        ['a', 'b', 'c']
        >>> build_vocab(Counter("b a c a b a d".split()), vocab_size=3)
        ['a', '<unk>', 'b']
    """
    items = dict(counts)
    if vocab_size is not None and len(items) > vocab_size:
        need_unk = True
    if need_unk:
        unk_count = items.pop(UNK, 0)
        ranked = sorted(items.items(), key=lambda kv: (-kv[1], kv[0]))
        keep = len(ranked) if vocab_size is None else min(len(ranked), vocab_size - 1)
        dropped = sum(c for _, c in ranked[keep:])
        items = dict(ranked[:keep])
        items[UNK] = unk_count + dropped
    return [w for w, _ in sorted(items.items(), key=lambda kv: (-kv[1], kv[0]))]


def _to_ids(words: list[str], word_to_id: dict[str, int]) -> Tensor:
    unk = word_to_id.get(UNK)
    if unk is None:
        ids = [word_to_id[w] for w in words if w in word_to_id]
    else:
        ids = [word_to_id.get(w, unk) for w in words]
    return torch.tensor(ids, dtype=torch.int32)


# --------------------------------------------------------------------------- cache
def cache_dir() -> Path:
    """Where token streams are cached.

    Returns:
        ``$GRADCLIP_CACHE_DIR`` or ``~/.cache/gradclip``.
    """
    env = os.environ.get("GRADCLIP_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "gradclip"


def _cache_key(shas: dict[str, str], tokens: str, vocab_size: int | None) -> str:
    h = hashlib.sha256()
    h.update(f"gradclip-lm-v{CACHE_VERSION}|{tokens}|{vocab_size}|".encode())
    for s in SPLITS:
        h.update(f"{s}={shas[s]}|".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- loading
def load_corpus(
    data_dir: str | os.PathLike[str],
    *,
    tokens: str = "word",
    prefix: str | None = None,
    vocab_size: int | None = None,
    use_cache: bool = True,
) -> Corpus:
    """Load and tokenise a corpus directory, from the cache when possible.

    The cache key is the SHA-256 of the three files and the tokenisation
    settings, so a changed file is never served stale.

    Args:
        data_dir: the corpus directory (see :func:`find_files`).
        tokens: ``"word"`` (the tutorial's) or ``"char"``.
        prefix: the file-name prefix, or ``None`` to detect it.
        vocab_size: the vocabulary cap (see :func:`build_vocab`).
        use_cache: read and write the token cache.

    Returns:
        The :class:`Corpus`.
    """
    if tokens not in TOKEN_MODES:
        raise DataError(f"tokens must be one of {', '.join(TOKEN_MODES)}, got {tokens!r}")
    files = find_files(data_dir, prefix)
    try:
        raws = {s: files[s].read_bytes() for s in SPLITS}
    except OSError as exc:
        raise DataError(f"cannot read {exc.filename}: {exc.strerror}") from None
    shas = {s: hashlib.sha256(raws[s]).hexdigest() for s in SPLITS}
    names = {s: str(files[s]) for s in SPLITS}
    key = _cache_key(shas, tokens, vocab_size)
    meta: dict[str, Any] = {"files": names, "sha256": shas, "tokens": tokens}
    cache_file = cache_dir() / "lm" / f"{key}.pt"
    if use_cache and cache_file.is_file():
        try:
            blob = torch.load(cache_file, weights_only=True)
            if blob.get("version") == CACHE_VERSION and blob.get("key") == key:
                train, valid, test = (blob[s] for s in SPLITS)
                return Corpus(list(blob["vocab"]), train, valid, test, **meta, from_cache=True)
        except Exception:  # a corrupt cache entry is rebuilt below
            pass
    words: dict[str, list[str]] = {}
    for s in SPLITS:
        try:
            text = raws[s].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{files[s]}: invalid UTF-8 at byte offset {exc.start} ({exc.reason})"
            ) from None
        words[s] = tokenize(text, tokens)
        if not words[s]:
            raise DataError(f"{s} file has no tokens: {files[s]}")
    counts = Counter(words["train"])
    held_out_oov = any(w not in counts for s in ("valid", "test") for w in words[s])
    vocab = build_vocab(counts, vocab_size, need_unk=held_out_oov)
    word_to_id = {w: i for i, w in enumerate(vocab)}
    ids = {s: _to_ids(words[s], word_to_id) for s in SPLITS}
    corpus = Corpus(vocab, ids["train"], ids["valid"], ids["test"], **meta)
    if use_cache:
        buf = io.BytesIO()
        torch.save({"version": CACHE_VERSION, "key": key, "vocab": vocab, **ids}, buf)
        with contextlib.suppress(OSError):  # an unwritable cache only costs time
            atomic_write_bytes(cache_file, buf.getvalue())
    return corpus
