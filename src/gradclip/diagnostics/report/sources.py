"""Read any gradclip output folder into one :class:`RunView` for the report.

Kinds, recognised by the files present (first match wins):

=========  =======================================================================
tasks      ``tasks.json`` (``gradclip tasks``)
profile    ``profile.json`` (``gradclip profile``)
sweep      ``sweep.json`` (``gradclip sweep``)
train      ``config.toml`` + ``run.json``, read through :func:`gradclip.lm.rundir.read_run`
suggest    ``suggest.png`` / ``suggest.json`` (``gradclip suggest --out``)
figures    any other folder of PNG files (``gradclip demo``'s ``figures/``)
=========  =======================================================================

A folder with none of these, an empty folder or a missing one is a
:class:`~gradclip.errors.UserError`.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradclip.diagnostics.profile import PROFILE_FILE
from gradclip.errors import UserError

__all__ = ["RunView", "read_view"]


@dataclass
class RunView:
    """What the report shows of one folder.

    ``steps``/``loss``/``norm``/``threshold``/``clipped`` are per-step series (``None``
    for a non-finite value); ``layers`` maps a layer to its per-step norms; ``events``
    are ``(step, kind, message)``; ``epochs`` are per-epoch dicts (``train_ppl``,
    ``valid_ppl``, …); ``facts`` are label/value rows; ``tables`` are ``(title, header,
    rows)``; ``images`` are ``(caption, data URI)`` of PNGs the folder already holds.
    """

    name: str
    kind: str
    path: Path
    facts: list[tuple[str, str]] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    loss: list[float | None] = field(default_factory=list)
    norm: list[float | None] = field(default_factory=list)
    threshold: list[float | None] = field(default_factory=list)
    clipped: list[bool] = field(default_factory=list)
    layers: dict[str, list[float | None]] = field(default_factory=dict)
    events: list[tuple[int, str, str]] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)
    profile: Any = None
    task_results: list[Any] = field(default_factory=list)
    curricula: list[Any] = field(default_factory=list)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "—" if not math.isfinite(v) else f"{v:.4g}"
    if v is None:
        return "—"
    return str(v)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None


def _png(path: Path) -> str:
    data = path.read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise UserError(f"{path} is not a PNG file")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def read_view(path: str | Path) -> RunView:
    """Read the folder ``path`` (see the module docstring for the kinds).

    Args:
        path: a run, sweep, suggest, tasks or profile folder.

    Returns:
        Its :class:`RunView`.

    Example:
        >>> read_view("no/such/folder")
        Traceback (most recent call last):
        ...
        gradclip.errors.UserError: run directory not found: no/such/folder
    """
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"run directory not found: {folder}")
    if not any(folder.iterdir()):
        raise UserError(f"run directory is empty: {folder}")
    view = RunView(name=folder.name or str(folder), kind="", path=folder)
    if (folder / "tasks.json").is_file():
        _read_tasks(view)
    elif (folder / PROFILE_FILE).is_file():
        _read_profile(view)
    elif (folder / "sweep.json").is_file():
        _read_sweep(view)
    elif (folder / "config.toml").is_file() and (folder / "run.json").is_file():
        _read_train(view)
    elif (folder / "suggest.png").is_file() or (folder / "suggest.json").is_file():
        _read_suggest(view)
    elif any(folder.glob("*.png")):
        view.kind = "figures"
        _add_pngs(view)
    else:
        raise UserError(
            f"nothing to report in {folder}: no tasks.json, profile.json, sweep.json, "
            "suggest.png, PNG or train run (config.toml + run.json)"
        )
    return view


def _read_tasks(view: RunView) -> None:
    from gradclip.diagnostics.tasks.grid import read_curricula, read_results

    view.kind = "tasks"
    try:
        results, settings = read_results(view.path)
        view.curricula = read_curricula(view.path)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{view.path / 'tasks.json'} is not a tasks result: {exc}") from None
    view.task_results = results
    view.facts = [(k, _fmt(v)) for k, v in settings.items()]
    if view.curricula:
        head = ["task", "method", "lengths", "seed", "longest solved", "updates", "clipped"]
        runs = [
            [
                c.config.task,
                c.config.method_label,
                c.config.length_label,
                str(c.config.seed),
                _fmt(c.longest_solved),
                str(c.updates),
                f"{100 * c.clip_rate:.0f} %",
            ]
            for c in view.curricula
        ]
        view.tables.append(("Curriculum runs", head, runs))
        return
    header = ["task", "method", "length", "seed", "success", "error", "diverged", "steps"]
    rows = [
        [
            r.config.task,
            r.config.method_label,
            r.config.length_label,
            str(r.config.seed),
            "yes" if r.success else "no",
            f"{100 * r.error:.1f} %" if math.isfinite(r.error) else "—",
            "yes" if r.diverged else "no",
            str(r.steps_run),
        ]
        for r in results
    ]
    view.tables.append(("Runs", header, rows))


def _read_profile(view: RunView) -> None:
    from gradclip.diagnostics.profile import TemporalProfile

    view.kind = "profile"
    doc = _json(view.path / PROFILE_FILE)
    try:
        view.profile = TemporalProfile.from_dict(doc["profile"])
    except (KeyError, TypeError) as exc:
        raise UserError(f"{view.path / PROFILE_FILE} is not a profile: {exc}") from None
    prof = view.profile
    view.facts = [("source", _fmt(doc.get("source"))), ("verdict", prof.verdict)]
    view.facts.append(("evidence", prof.evidence))
    rows = [[w.name, f"{w.sigma_max:.4g}", f"{w.bound:g}", w.condition] for w in prof.weights]
    view.tables.append(("Recurrent weights (λ₁ vs 1/γ)", ["weight", "λ₁", "1/γ", "so"], rows))


def _read_sweep(view: RunView) -> None:
    view.kind = "sweep"
    doc = _json(view.path / "sweep.json")
    rows = doc.get("rows", []) if isinstance(doc, dict) else []
    if rows:
        header = list(rows[0])
        view.tables.append(("Cells", header, [[_fmt(r.get(k)) for k in header] for r in rows]))
    _add_pngs(view)


def _read_suggest(view: RunView) -> None:
    view.kind = "suggest"
    if (view.path / "suggest.json").is_file():
        doc = _json(view.path / "suggest.json")
        if isinstance(doc, dict):
            view.facts = [(k, _fmt(v)) for k, v in doc.items() if not isinstance(v, list | dict)]
    _add_pngs(view)


def _add_pngs(view: RunView) -> None:
    for png in sorted(view.path.glob("*.png")):
        view.images.append((png.name, _png(png)))


def _read_train(view: RunView) -> None:
    from gradclip.lm.rundir import read_run

    view.kind = "train"
    run = read_run(view.path)
    cfg = run.config
    view.facts = [
        ("status", run.status),
        ("clipper", _fmt(run.info.get("clip_spec", run.info.get("clip")))),
    ]
    for key in ("cell", "hidden_size", "num_layers", "num_steps", "learning_rate"):
        if hasattr(cfg, key):
            view.facts.append((key, _fmt(getattr(cfg, key))))
    summary = run.summary or {}
    for key in ("test_ppl", "clip_rate", "diverged_step"):
        if key in summary:
            view.facts.append((key, _fmt(summary[key])))
    history = summary.get("epochs", summary.get("history"))
    if isinstance(history, list):
        view.epochs = [h for h in history if isinstance(h, dict)]
    for rec in run.metrics():
        _add_record(view, rec)


def _add_record(view: RunView, rec: dict[str, Any]) -> None:
    """One ``metrics.jsonl`` record (a step, or a monitor event record)."""
    if rec.get("kind") == "event":
        view.events.append(
            (int(rec.get("step", 0)), str(rec.get("event")), str(rec.get("message", "")))
        )
        return
    step = rec.get("step")
    if not isinstance(step, int):
        return
    view.steps.append(step)
    view.loss.append(_num(rec.get("loss")))
    view.norm.append(_num(rec.get("norm")))
    view.threshold.append(_num(rec.get("threshold")))
    view.clipped.append(bool(rec.get("clipped")))
    layers = rec.get("layers")
    if isinstance(layers, dict):
        for name, value in layers.items():
            col = view.layers.setdefault(name, [None] * (len(view.steps) - 1))
            col.append(_num(value))
    for col in view.layers.values():
        col.extend([None] * (len(view.steps) - len(col)))
    for ev in rec.get("events") or []:
        if isinstance(ev, dict):
            view.events.append((step, str(ev.get("event")), str(ev.get("message", ""))))
