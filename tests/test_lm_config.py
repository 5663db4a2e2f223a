"""Configs: the tutorial's values, TOML files and flag overrides."""

from __future__ import annotations

import pytest

from gradclip.lm.config import LMConfig, load_config

# The reference's table (§1), column by column.
REFERENCE = {
    "small": (0.1, 1.0, 5, 2, 20, 200, 4, 13, 1.0, 0.5, 20, 10000),
    "medium": (0.05, 1.0, 5, 2, 35, 650, 6, 39, 0.5, 0.8, 20, 10000),
    "large": (0.04, 1.0, 10, 2, 35, 1500, 14, 55, 0.35, 1 / 1.15, 20, 10000),
    "test": (0.1, 1.0, 1, 1, 2, 2, 1, 1, 1.0, 0.5, 20, 10000),
}
KEYS = (
    "init_scale",
    "learning_rate",
    "max_grad_norm",
    "num_layers",
    "num_steps",
    "hidden_size",
    "max_epoch",
    "max_max_epoch",
    "keep_prob",
    "lr_decay",
    "batch_size",
    "vocab_size",
)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_builtin_configs_carry_the_tutorial_values(name):
    cfg, _ = load_config(name)
    for key, value in zip(KEYS, REFERENCE[name], strict=True):
        assert getattr(cfg, key) == pytest.approx(value), key
    assert cfg.cell == "lstm" and cfg.clip == ""


def test_flags_override_and_are_converted():
    cfg, sources = load_config("small", {"learning_rate": "0.5", "num_steps": "35", "clip": None})
    assert cfg.learning_rate == 0.5 and cfg.num_steps == 35
    assert sources["learning_rate"] == "--learning-rate"
    assert sources["hidden_size"] == "config 'small'"


def test_toml_file_with_base_and_round_trip(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text('base = "medium"\nnum_layers = 3\nclip = "value:clip_value=1"\n')
    cfg, _ = load_config(str(path), {"seed": "7"})
    assert cfg.num_layers == 3 and cfg.hidden_size == 650 and cfg.seed == 7
    assert cfg.clip == "value:clip_value=1"
    again = tmp_path / "again.toml"
    again.write_text(cfg.to_toml())
    assert load_config(str(again))[0] == cfg


def test_toml_without_base_must_be_complete(tmp_path):
    path = tmp_path / "part.toml"
    path.write_text("num_layers = 3\n")
    with pytest.raises(ValueError, match="missing init_scale"):
        load_config(str(path))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"learning_rate": "-1"},
            r"learning_rate must be positive, got -1.0 \(from --learning-rate\)",
        ),
        ({"learning_rate": "abc"}, "learning_rate .*must be a number"),
        ({"keep_prob": "0"}, r"keep_prob must be in \(0, 1\]"),
        ({"num_steps": "0"}, "num_steps must be at least 1"),
        ({"num_steps": "2.5"}, "num_steps .*must be an integer"),
        ({"max_grad_norm": "0"}, "max_grad_norm must be positive"),
        ({"cell": "lstmx"}, "cell must be one of lstm, gru, rnn_tanh"),
        ({"init_scale": "nan"}, "init_scale must be finite"),
    ],
)
def test_bad_values_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config("small", overrides)


def test_unknown_config_and_bad_files(tmp_path):
    with pytest.raises(ValueError, match="unknown config 'huge'"):
        load_config("huge")
    with pytest.raises(ValueError, match="config file not found"):
        load_config(str(tmp_path / "none.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text('base = "small"\nlearning_rat = 2\n')
    with pytest.raises(ValueError, match="unknown key 'learning_rat'"):
        load_config(str(bad))
    bad.write_text("= oops")
    with pytest.raises(ValueError, match="invalid TOML"):
        load_config(str(bad))


def test_lr_at_formula():
    cfg = LMConfig(0.1, 2.0, 5, 1, 2, 2, 3, 6, 1.0, 0.5, 2, 10)
    assert [cfg.lr_at(i) for i in range(6)] == [2.0, 2.0, 2.0, 1.0, 0.5, 0.25]
