"""The registry, the option declarations and the spec grammar, read from the registry."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradclip import CLIPPER_NAMES, format_clipper_spec, make_clipper, parse_clipper_spec
from gradclip.clippers import (
    Clipper,
    clipper_class,
    clipper_options,
    make_clipper_from_spec,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "clippers.md"

# Every threshold-like option of every clipper: zero, negative, NaN and bools are rejected.
THRESHOLDS = [
    (name, key)
    for name in CLIPPER_NAMES
    for key in clipper_options(name)
    if key in ("max_norm", "clip_value", "z_threshold", "clip_factor", "warmup_max_norm")
]


def test_every_registered_name_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for name in CLIPPER_NAMES:
        assert f"`{name}`" in text, f"{name} missing from docs/clippers.md"


def test_registry_classes_names_and_option_declarations() -> None:
    for name in CLIPPER_NAMES:
        cls = clipper_class(name)
        assert issubclass(cls, Clipper) and cls.name == name
        options = clipper_options(name)
        assert "nonfinite" in options
        clipper = make_clipper(name)
        for key, option in options.items():
            assert option.help and option.type in (float, int, str, tuple)
            assert getattr(clipper, key) == option.default or key == "norm_type"


def test_unknown_names_and_options_suggest_the_nearest() -> None:
    with pytest.raises(ValueError, match=r"unknown clipper 'nrom'; did you mean 'norm'\?"):
        make_clipper("nrom")
    with pytest.raises(ValueError, match=r"choose from none, norm"):
        parse_clipper_spec("zzzzzz")
    with pytest.raises(ValueError, match=r"no option 'windw'; did you mean 'window'\?"):
        make_clipper("autoclip", windw=3)
    with pytest.raises(ValueError, match=r"no option 'max_nrom'; did you mean 'max_norm'\?"):
        parse_clipper_spec("norm:max_nrom=1")


@pytest.mark.parametrize(("name", "key"), THRESHOLDS)
@pytest.mark.parametrize("bad", [0, 0.0, -1.0, math.nan, True])
def test_thresholds_reject_zero_negative_nan_and_bools(name: str, key: str, bad: Any) -> None:
    with pytest.raises((TypeError, ValueError), match=key):
        make_clipper(name, **{key: bad})


@pytest.mark.parametrize(("name", "key"), THRESHOLDS)
@pytest.mark.parametrize("text", ["0", "-1", "nan", "ten"])
def test_spec_thresholds_reject_bad_text_naming_the_option(name: str, key: str, text: str) -> None:
    with pytest.raises(ValueError, match=key):
        parse_clipper_spec(f"{name}:{key}={text}")


def test_issue_8_zero_thresholds_in_specs() -> None:
    for spec in ("norm:max_norm=0", "value:clip_value=0", "tensor-norm:max_norm=0"):
        with pytest.raises(ValueError, match="must be positive"):
            make_clipper_from_spec(spec)


def test_z_threshold_true_is_rejected_like_check_threshold() -> None:
    with pytest.raises(TypeError, match="z_threshold"):
        make_clipper("zclip", z_threshold=True)


def test_spec_defaults_fill_only_unset_options_and_unknown_defaults_raise() -> None:
    c = make_clipper_from_spec("norm", max_norm=5.0)
    assert c.max_norm == 5.0  # type: ignore[attr-defined]
    c = make_clipper_from_spec("norm:max_norm=2", max_norm=5.0)
    assert c.max_norm == 2.0  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="max_norm"):
        make_clipper_from_spec("zclip", max_norm=5.0)


def _valid_value(option: Any) -> st.SearchStrategy[Any]:
    key = option.name
    if key == "nonfinite":
        return st.sampled_from(["propagate", "error", "skip"])
    if key == "norm_type":
        return st.sampled_from([1.0, 2.0, 3.5, math.inf])
    if key == "exclude":
        return st.lists(st.from_regex(r"[a-z][a-z0-9_.]{0,8}", fullmatch=True), max_size=3).map(
            tuple
        )
    if option.type is int:
        return st.integers(1, 10_000)
    if key == "percentile":
        return st.floats(0, 100)
    if key == "alpha":
        return st.floats(0, 0.999)
    if key == "factor":
        return st.floats(0.5, 10)
    if key == "eps":
        return st.floats(0, 1)
    base = st.floats(1e-6, 1e6)
    return st.one_of(st.none(), base) if option.optional else base


@st.composite
def specs(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    name = draw(st.sampled_from(CLIPPER_NAMES))
    options = clipper_options(name)
    keys = draw(st.lists(st.sampled_from(list(options)), unique=True))
    return name, {k: draw(_valid_value(options[k])) for k in keys}


@settings(max_examples=200, deadline=None)
@given(specs())
def test_format_then_parse_is_identity(spec: tuple[str, dict[str, Any]]) -> None:
    name, options = spec
    text = format_clipper_spec(name, options)
    parsed_name, parsed = parse_clipper_spec(text)
    expected = {k: clipper_options(name)[k].validate(v) for k, v in options.items()}
    assert parsed_name == name and parsed == expected
    assert repr(make_clipper_from_spec(text)) == repr(make_clipper(name, **options))


def test_format_refuses_what_cannot_round_trip() -> None:
    with pytest.raises(TypeError, match="tensor"):
        format_clipper_spec("norm", {"max_norm": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="cannot be written"):
        format_clipper_spec("agc", {"exclude": ("a,b",)})
    with pytest.raises(ValueError, match="must be positive"):
        format_clipper_spec("norm", {"max_norm": 0.0})
    assert format_clipper_spec("Tensor_Norm", {}) == "tensor-norm"


def test_docs_example_of_a_new_clipper_registers_by_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    from gradclip.clippers import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # scratch registry
    text = DOCS.read_text(encoding="utf-8")
    code = text.split("## Adding a clipper", 1)[1].split("```py\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "docs/clippers.md", "exec"), {"__name__": "docs_example"})
    assert registry.clipper_names()[:3] == ("none", "norm", "half-norm")
    c = make_clipper_from_spec("half-norm:max_norm=4")
    g = [torch.tensor([3.0, 4.0])]
    stats = c.clip(g)
    assert float(stats.threshold) == 2.0 and float(stats.clipped_norm) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="must be positive"):
        parse_clipper_spec("half-norm:max_norm=0")
