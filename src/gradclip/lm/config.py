"""Training configurations: the TensorFlow PTB tutorial's four configs, TOML files, flags.

Each field of :class:`LMConfig` is declared once, as a dataclass field whose
type annotation is the value's type and whose metadata holds its help text
(and extra flag spellings); the TOML reader and ``gradclip train``'s flags are
derived from that declaration (:data:`FIELDS`).

A config is resolved in three layers, later ones winning:

1. a built-in config (``small``, ``medium``, ``large``, ``test``; the TOML files in
   ``gradclip/configs``) or a user TOML file (which may name a built-in ``base``);
2. the keys of that TOML file;
3. command-line flags.

Every value is checked, and a bad one raises :class:`ConfigError` (a
:class:`~gradclip.errors.UserError`) naming the key, the value and where it came from.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import typing
from dataclasses import dataclass, field, fields
from importlib import resources
from typing import Any

from gradclip.clippers import parse_clipper_spec
from gradclip.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "BUILTIN_CONFIGS",
    "CELLS",
    "FIELDS",
    "ConfigError",
    "LMConfig",
    "clip_options",
    "load_config",
]

BUILTIN_CONFIGS = ("small", "medium", "large", "test")
CELLS = ("lstm", "gru", "rnn_tanh")


class ConfigError(UserError):
    """A config value, TOML file or config name that the user can fix.

    Example:
        >>> try:
        ...     load_config("huge")
        ... except ConfigError as exc:
        ...     print(str(exc)[:24])
        unknown config 'huge': e
    """


def _f(help: str, *flags: str, default: Any = dataclasses.MISSING) -> Any:
    """A config field: its help text and any extra flag spellings, declared once."""
    return field(default=default, metadata={"help": help, "flags": flags})


@dataclass(frozen=True)
class LMConfig:
    """One training recipe. The first twelve fields are the tutorial's, same names.

    Example:
        >>> from gradclip.lm.config import load_config
        >>> cfg, sources = load_config("small", {"learning_rate": "0.5"})
        >>> cfg.hidden_size, cfg.learning_rate, sources["learning_rate"]
        (200, 0.5, '--learning-rate')
    """

    init_scale: float = _f("uniform init range ±X")
    learning_rate: float = _f("initial SGD learning rate (TF scale)", "--lr")
    max_grad_norm: float = _f("global-norm threshold of the default 'norm' clipper")
    num_layers: int = _f("recurrent layers")
    num_steps: int = _f("unroll length T (truncated BPTT)")
    hidden_size: int = _f("hidden size = embedding size")
    max_epoch: int = _f("epochs at the full learning rate")
    max_max_epoch: int = _f("total epochs")
    keep_prob: float = _f("dropout keep probability")
    lr_decay: float = _f("learning-rate decay per epoch after max_epoch")
    batch_size: int = _f("batch size B")
    vocab_size: int = _f("vocabulary cap (the rest maps to <unk>)")
    cell: str = _f(f"recurrent cell: {', '.join(CELLS)}", default="lstm")
    clip: str = _f(
        "clipper NAME[:key=value,...]; empty: norm at max_grad_norm (tf.clip_by_global_norm)",
        default="",
    )
    seed: int = _f("random seed (initialisation and dropout)", default=1)
    checkpoint_steps: int = _f("write a checkpoint every N steps (0: never)", default=1000)
    checkpoint_minutes: float = _f(
        "write a checkpoint every M minutes of training (0: never)", default=10.0
    )

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch``: lr · lr_decay^max(epoch + 1 − max_epoch, 0).

        Args:
            epoch: 0-based epoch index.

        Returns:
            The tutorial's learning rate for that epoch.

        Example:
            >>> cfg, _ = load_config("small")  # max_epoch 4, lr_decay 0.5
            >>> [cfg.lr_at(i) for i in (0, 3, 4, 5)]
            [1.0, 1.0, 0.5, 0.25]
        """
        return self.learning_rate * self.lr_decay ** max(epoch + 1 - self.max_epoch, 0)

    def to_toml(self) -> str:
        """The config as a TOML document that :func:`load_config` reads back.

        Returns:
            TOML text with one ``key = value`` line per field.

        Example:
            >>> load_config("small")[0].to_toml().splitlines()[2]
            'learning_rate = 1.0'
        """
        lines = ["# gradclip train: resolved configuration"]
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str):
                escaped = value.replace("\\", "\\\\").replace('"', '\\"')
                lines.append(f'{f.name} = "{escaped}"')
            else:
                lines.append(f"{f.name} = {value!r}")
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (for checkpoints and summaries).

        Returns:
            ``{field name: value}``.

        Example:
            >>> load_config("test")[0].as_dict()["hidden_size"]
            2
        """
        return dataclasses.asdict(self)


#: Field name → (type, help, flags); the one description of every config key.
FIELDS: dict[str, tuple[type, str, tuple[str, ...]]] = {
    f.name: (
        typing.get_type_hints(LMConfig)[f.name],
        f.metadata["help"],
        ("--" + f.name.replace("_", "-"), *f.metadata["flags"]),
    )
    for f in fields(LMConfig)
}
FIELD_NAMES = tuple(FIELDS)
_REQUIRED = tuple(f.name for f in fields(LMConfig) if f.default is dataclasses.MISSING)


def clip_options(cfg: LMConfig) -> tuple[str, dict[str, Any]]:
    """The clipper of ``cfg``: its ``clip`` spec parsed by the spec grammar, with
    ``max_grad_norm`` as the ``norm`` clipper's ``max_norm`` unless the spec sets it.

    Args:
        cfg: the config.

    Returns:
        ``(canonical clipper name, validated options)``.

    Example:
        >>> cfg, _ = load_config("small")
        >>> clip_options(cfg)
        ('norm', {'max_norm': 5.0})
        >>> clip_options(dataclasses.replace(cfg, clip="autoclip:percentile=10"))
        ('autoclip', {'percentile': 10.0})
    """
    try:
        name, options = parse_clipper_spec(cfg.clip.strip() or "norm")
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--clip {cfg.clip}: {exc}") from None
    if name == "norm":
        options = {"max_norm": cfg.max_grad_norm, **options}
    return name, options


def convert(name: str, value: object, source: str) -> Any:
    """Convert ``value`` (a TOML value or a flag string) to the type of field ``name``.

    Args:
        name: the field name.
        value: the raw value.
        source: where it came from, for the error message.

    Returns:
        The value as the field's type.

    Example:
        >>> convert("num_steps", "35", "--num-steps"), convert("keep_prob", 1, "my.toml")
        (35, 1.0)
    """
    kind = FIELDS[name][0]
    where = f"{name} (from {source})"
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    if not isinstance(value, bool):
        if kind is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, (int, str)) or (kind is float and isinstance(value, float)):
            try:
                return kind(value)
            except ValueError:
                pass
    rule = "an integer" if kind is int else "a number"
    raise ConfigError(f"{where} must be {rule}, got {value!r}")


def validate(cfg: LMConfig, sources: dict[str, str] | None = None) -> LMConfig:
    """Check every value of ``cfg``.

    Args:
        cfg: the config.
        sources: where each value came from (named in the error).

    Returns:
        ``cfg`` itself; the first bad value raises :class:`ConfigError`.

    Example:
        >>> cfg, _ = load_config("test")
        >>> validate(dataclasses.replace(cfg, keep_prob=0.0))
        Traceback (most recent call last):
        ...
        gradclip.lm.config.ConfigError: keep_prob must be in (0, 1], got 0.0
    """
    src = sources or {}

    def bad(name: str, rule: str) -> ConfigError:
        origin = f" (from {src[name]})" if name in src else ""
        return ConfigError(f"{name} must be {rule}, got {getattr(cfg, name)!r}{origin}")

    floats = [n for n, (kind, _, _) in FIELDS.items() if kind is float]
    for name in floats:
        if not math.isfinite(getattr(cfg, name)):
            raise bad(name, "finite")
    for name in ("learning_rate", "max_grad_norm", "lr_decay"):
        if getattr(cfg, name) <= 0:
            raise bad(name, "positive")
    for name in ("init_scale", "checkpoint_minutes"):
        if getattr(cfg, name) < 0:
            raise bad(name, "non-negative")
    if not 0 < cfg.keep_prob <= 1:
        raise bad("keep_prob", "in (0, 1]")
    for name in ("num_layers", "num_steps", "hidden_size", "batch_size", "max_max_epoch"):
        if getattr(cfg, name) < 1:
            raise bad(name, "at least 1")
    for name in ("max_epoch", "seed", "checkpoint_steps"):
        if getattr(cfg, name) < 0:
            raise bad(name, "non-negative")
    if cfg.vocab_size < 2:
        raise bad("vocab_size", "at least 2")
    if cfg.cell not in CELLS:
        raise bad("cell", f"one of {', '.join(CELLS)}")
    name, options = clip_options(cfg)
    if src.get("max_grad_norm", "").startswith("--") and (
        name != "norm" or options["max_norm"] != cfg.max_grad_norm
    ):
        raise ConfigError(
            f"--max-grad-norm sets the threshold of the default 'norm' clipper, but --clip "
            f"{cfg.clip} {'sets max_norm itself' if name == 'norm' else f'names {name!r}'}; "
            "give the threshold in one place"
        )
    return cfg


def _read_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None


def builtin_values(name: str) -> dict[str, Any]:
    """The raw values of built-in config ``name``.

    Args:
        name: one of :data:`BUILTIN_CONFIGS`.

    Returns:
        The TOML keys and values of that config.

    Example:
        >>> builtin_values("large")["hidden_size"]
        1500
    """
    if name not in BUILTIN_CONFIGS:
        raise ConfigError(
            f"unknown config {name!r}: expected one of {', '.join(BUILTIN_CONFIGS)} "
            "or a path to a .toml file"
        )
    text = resources.files("gradclip").joinpath(f"configs/{name}.toml").read_text("utf-8")
    return _read_toml(text, f"built-in config {name!r}")


def _read_file(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: invalid UTF-8 at byte offset {exc.start}") from None
    return _read_toml(text, path)


def load_config(
    name_or_path: str, overrides: dict[str, object] | None = None
) -> tuple[LMConfig, dict[str, str]]:
    """Resolve a config: built-in name or TOML path, then ``overrides`` (flag values).

    Args:
        name_or_path: a built-in config name or a TOML file (which may set ``base``).
        overrides: field name → flag value (``None`` values are ignored).

    Returns:
        The validated config and, for each field, where its value came from.

    Example:
        >>> cfg, sources = load_config("medium", {"num_layers": "3"})
        >>> cfg.num_layers, sources["num_layers"], sources["hidden_size"]
        (3, '--num-layers', "config 'medium'")
    """
    layers: list[tuple[str, dict[str, Any]]] = []
    if name_or_path in BUILTIN_CONFIGS:
        layers.append((f"config {name_or_path!r}", builtin_values(name_or_path)))
    elif name_or_path.endswith(".toml") or os.sep in name_or_path or os.path.exists(name_or_path):
        data = _read_file(name_or_path)
        base = data.pop("base", None)
        if base is not None:
            if not isinstance(base, str):
                raise ConfigError(f"{name_or_path}: base must be a config name, got {base!r}")
            layers.append((f"config {base!r}", builtin_values(base)))
        for k in data:
            if k not in FIELDS:
                raise ConfigError(
                    f"{name_or_path}: unknown key {k!r}; known keys: base, {', '.join(FIELDS)}"
                )
        layers.append((name_or_path, data))
    else:
        builtin_values(name_or_path)  # raises the "unknown config" error
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    layers.extend((FIELDS[k][2][0], {k: v}) for k, v in flags.items())
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, data in layers:
        for k, v in data.items():
            values[k] = convert(k, v, source)
            sources[k] = source
    missing = [k for k in _REQUIRED if k not in values]
    if missing:
        raise ConfigError(
            f"config {name_or_path}: missing {', '.join(missing)} (set them or name a base config)"
        )
    return validate(LMConfig(**values), sources), sources
