"""Training configurations: the TensorFlow PTB tutorial's four configs, TOML files, flags.

A config is resolved in three layers, later ones winning:

1. a built-in config (``small``, ``medium``, ``large``, ``test``; the TOML files in
   ``gradclip/configs``) or a user TOML file (which may name a built-in ``base``);
2. the keys of that TOML file;
3. command-line flags.

Every value is checked, and a bad one raises :class:`ValueError` naming the key,
the value and where it came from.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import dataclass, fields
from importlib import resources
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

BUILTIN_CONFIGS = ("small", "medium", "large", "test")
CELLS = ("lstm", "gru", "rnn_tanh")


@dataclass(frozen=True)
class LMConfig:
    """One training recipe. The first twelve fields are the tutorial's, same names."""

    init_scale: float
    learning_rate: float
    max_grad_norm: float
    num_layers: int
    num_steps: int
    hidden_size: int
    max_epoch: int
    max_max_epoch: int
    keep_prob: float
    lr_decay: float
    batch_size: int
    vocab_size: int
    #: Recurrent cell: ``lstm`` (the tutorial's), ``gru`` or ``rnn_tanh``.
    cell: str = "lstm"
    #: Clipper spec ``NAME[:key=value,...]`` for :func:`gradclip.make_clipper_from_spec`;
    #: empty means ``norm`` at ``max_grad_norm`` (``tf.clip_by_global_norm``).
    clip: str = ""
    #: Seed for initialisation and dropout.
    seed: int = 1

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch``: lr · lr_decay^max(epoch + 1 − max_epoch, 0)."""
        return self.learning_rate * self.lr_decay ** max(epoch + 1 - self.max_epoch, 0)

    def to_toml(self) -> str:
        """The config as a TOML document that :func:`load_config` reads back."""
        lines = ["# gradclip train: resolved configuration"]
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str):
                lines.append(f"{f.name} = {_toml_string(value)}")
            elif isinstance(value, float):
                lines.append(f"{f.name} = {value!r}")
            else:
                lines.append(f"{f.name} = {value}")
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _toml_string(s: str) -> str:
    escaped = s.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


_FIELD_TYPES: dict[str, type] = {
    "init_scale": float,
    "learning_rate": float,
    "max_grad_norm": float,
    "num_layers": int,
    "num_steps": int,
    "hidden_size": int,
    "max_epoch": int,
    "max_max_epoch": int,
    "keep_prob": float,
    "lr_decay": float,
    "batch_size": int,
    "vocab_size": int,
    "cell": str,
    "clip": str,
    "seed": int,
}
FIELD_NAMES = tuple(_FIELD_TYPES)
_REQUIRED = tuple(f.name for f in fields(LMConfig) if f.default is dataclasses.MISSING)


def convert(name: str, value: object, source: str) -> Any:
    """Convert ``value`` (a TOML value or a flag string) to the type of field ``name``."""
    kind = _FIELD_TYPES[name]
    where = f"{name} (from {source})"
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {value!r}")
        return value
    if isinstance(value, bool):
        raise ValueError(f"{where} must be a number, got {value!r}")
    if kind is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ValueError(f"{where} must be an integer, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ValueError(f"{where} must be a number, got {value!r}")


def validate(cfg: LMConfig, sources: dict[str, str] | None = None) -> LMConfig:
    """Check every value of ``cfg``; raise ValueError naming the first bad one."""
    src = sources or {}

    def bad(name: str, rule: str) -> ValueError:
        origin = f" (from {src[name]})" if name in src else ""
        return ValueError(f"{name} must be {rule}, got {getattr(cfg, name)!r}{origin}")

    for name in ("init_scale", "learning_rate", "max_grad_norm", "keep_prob", "lr_decay"):
        if not math.isfinite(getattr(cfg, name)):
            raise bad(name, "finite")
    if cfg.init_scale < 0:
        raise bad("init_scale", "non-negative")
    if cfg.learning_rate <= 0:
        raise bad("learning_rate", "positive")
    if cfg.max_grad_norm <= 0:
        raise bad("max_grad_norm", "positive")
    if not 0 < cfg.keep_prob <= 1:
        raise bad("keep_prob", "in (0, 1]")
    if cfg.lr_decay <= 0:
        raise bad("lr_decay", "positive")
    for name in ("num_layers", "num_steps", "hidden_size", "batch_size", "max_max_epoch"):
        if getattr(cfg, name) < 1:
            raise bad(name, "at least 1")
    if cfg.max_epoch < 0:
        raise bad("max_epoch", "non-negative")
    if cfg.vocab_size < 2:
        raise bad("vocab_size", "at least 2")
    if cfg.cell not in CELLS:
        raise bad("cell", f"one of {', '.join(CELLS)}")
    if cfg.seed < 0:
        raise bad("seed", "non-negative")
    return cfg


def _read_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{source}: invalid TOML: {exc}") from None


def builtin_values(name: str) -> dict[str, Any]:
    """The raw values of built-in config ``name``."""
    if name not in BUILTIN_CONFIGS:
        raise ValueError(
            f"unknown config {name!r}: expected one of {', '.join(BUILTIN_CONFIGS)} "
            "or a path to a .toml file"
        )
    text = resources.files("gradclip").joinpath(f"configs/{name}.toml").read_text("utf-8")
    return _read_toml(text, f"built-in config {name!r}")


def load_config(
    name_or_path: str, overrides: dict[str, object] | None = None
) -> tuple[LMConfig, dict[str, str]]:
    """Resolve a config: built-in name or TOML path, then ``overrides`` (flag values).

    Returns the validated config and, for each field, where its value came from.
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if name_or_path in BUILTIN_CONFIGS:
        for k, v in builtin_values(name_or_path).items():
            values[k] = convert(k, v, f"config {name_or_path!r}")
            sources[k] = f"config {name_or_path!r}"
    elif name_or_path.endswith(".toml") or os.sep in name_or_path or os.path.exists(name_or_path):
        path = name_or_path
        if not os.path.isfile(path):
            raise ValueError(f"config file not found: {path}")
        with open(path, "rb") as fh:
            raw = fh.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: invalid UTF-8 at byte offset {exc.start}") from None
        data = _read_toml(text, path)
        base = data.pop("base", None)
        if base is not None:
            if not isinstance(base, str):
                raise ValueError(f"{path}: base must be a config name, got {base!r}")
            for k, v in builtin_values(base).items():
                values[k] = convert(k, v, f"config {base!r}")
                sources[k] = f"config {base!r}"
        for k, v in data.items():
            if k not in _FIELD_TYPES:
                raise ValueError(
                    f"{path}: unknown key {k!r}; known keys: base, {', '.join(FIELD_NAMES)}"
                )
            values[k] = convert(k, v, path)
            sources[k] = path
    else:
        builtin_values(name_or_path)  # raises the "unknown config" error
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        flag = "--" + k.replace("_", "-")
        values[k] = convert(k, v, flag)
        sources[k] = flag
    missing = [k for k in _REQUIRED if k not in values]
    if missing:
        raise ValueError(
            f"config {name_or_path}: missing {', '.join(missing)} (set them or name a base config)"
        )
    cfg = LMConfig(**values)
    return validate(cfg, sources), sources
