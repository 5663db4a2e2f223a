"""Figures of a report (matplotlib, Agg) and the one self-contained HTML page (jinja2).

Every figure is a PNG embedded as a ``data:`` URI; the page has no script, no
external style sheet and no link that needs the network.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gradclip.diagnostics import plots
from gradclip.diagnostics.report.sources import RunView, read_view

__all__ = ["render_html", "write_report"]

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .9em; }
td, th { border: 1px solid #ddd; padding: .25em .6em; text-align: left; }
th { background: #f4f4f4; } figure { margin: 1em 0; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; } .kind { color: #777; font-weight: normal; }
.note { background: #f8f8f0; border-left: 4px solid #cc9; padding: .5em 1em; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p>Generated {{ generated }} by gradclip {{ version }} from {{ views|length }} folder(s).</p>
{% if intro %}<div class="note">{{ intro }}</div>{% endif %}
<ul>{% for v in views %}<li><a href="#run{{ loop.index }}">{{ v.name }}</a>
 <span class="kind">({{ v.kind }})</span> — <code>{{ v.path }}</code></li>{% endfor %}</ul>
{% for fig in overview %}
<figure><img src="{{ fig.src }}" alt="{{ fig.caption }}">
<figcaption>{{ fig.caption }}</figcaption></figure>
{% endfor %}
{% for v in views %}
<h2 id="run{{ loop.index }}">{{ v.name }} <span class="kind">({{ v.kind }})</span></h2>
{% if v.facts %}<table>{% for k, val in v.facts %}
<tr><th>{{ k }}</th><td>{{ val }}</td></tr>{% endfor %}</table>{% endif %}
{% for fig in v.figures %}
<figure><img src="{{ fig.src }}" alt="{{ fig.caption }}">
<figcaption>{{ fig.caption }}</figcaption></figure>
{% endfor %}
{% for t_title, header, rows in v.tables %}
<h3>{{ t_title }}</h3>
<table><tr>{% for h in header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>
{% endfor %}
{% if v.events %}<h3>Monitor events</h3><table><tr><th>step</th><th>event</th><th>message</th></tr>
{% for s, k, m in v.events[:200] %}
<tr><td>{{ s }}</td><td>{{ k }}</td><td>{{ m }}</td></tr>{% endfor %}</table>{% endif %}
{% endfor %}
</body>
</html>
"""


def _fig(fig: Any, caption: str) -> dict[str, str]:
    return {"src": plots.png_data_uri(fig, dpi=90), "caption": caption}


def _smooth(values: Sequence[float | None], width: int) -> list[float]:
    out, window = [], []
    for v in values:
        if v is not None:
            window.append(v)
        if len(window) > width:
            window.pop(0)
        out.append(sum(window) / len(window) if window else math.nan)
    return out


def _series(v: Sequence[float | None]) -> list[float]:
    return [math.nan if x is None else x for x in v]


def _overview(views: Sequence[RunView]) -> list[dict[str, str]]:
    out = []
    profiles = [(v.name, v.profile) for v in views if v.profile is not None]
    if len(profiles) > 1:
        fig, ax = plots.figure(8, 4.0)
        plots.profile_axes(ax, profiles)
        out.append(_fig(fig, "Temporal profiles overlaid."))
    if sum(bool(v.curricula) for v in views) > 1:
        from gradclip.diagnostics.tasks.curriculum_summary import curriculum_figure

        fig = curriculum_figure([c for v in views for c in v.curricula])
        text = "Curricula of every folder overlaid (an arm in several folders pools its runs)."
        out.append(_fig(fig, text))
    curves = [v for v in views if v.steps]
    if not curves:
        return out
    fig, (ax1, ax2) = plots.figure(10, 3.6, ncols=2)
    for v in curves:
        width = max(1, len(v.steps) // 100)
        ax1.plot(v.steps, _smooth(v.loss, width), label=v.name)
        ax2.semilogy(v.steps, _series(v.norm), lw=0.8, alpha=0.8, label=v.name)
    ax1.set(xlabel="step", ylabel="training loss (moving average)")
    ax2.set(xlabel="step", ylabel="global gradient norm (before clipping)")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return [*out, _fig(fig, "All runs overlaid: training loss and gradient norm against step.")]


def _train_figures(v: RunView) -> list[dict[str, str]]:
    figs = []
    if v.steps:
        fig, ax = plots.figure(10, 3.2)
        width = max(1, len(v.steps) // 100)
        ax.plot(v.steps, _series(v.loss), lw=0.5, alpha=0.4, color="#1f77b4", label="per step")
        ax.plot(v.steps, _smooth(v.loss, width), color="#1f77b4", label=f"{width}-step mean")
        ax.set(xlabel="step", ylabel="training loss")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        figs.append(_fig(fig, "Training loss per step."))
        fig, ax = plots.figure(10, 3.6)
        ax.semilogy(v.steps, _series(v.norm), lw=0.7, color="#1f77b4", label="norm (pre-clip)")
        if any(t is not None for t in v.threshold):
            ax.plot(v.steps, _series(v.threshold), "--", color="#d62728", label="threshold")
        hits = [(s, n) for s, n, c in zip(v.steps, v.norm, v.clipped, strict=True) if c and n]
        if hits:
            ax.plot(*zip(*hits, strict=True), ".", ms=2, color="#ff7f0e", label="clipped steps")
        for i, (s, _kind, _msg) in enumerate(v.events):
            ax.axvline(
                s, color="#9467bd", alpha=0.5, lw=0.8, label="monitor event" if i == 0 else None
            )
        ax.set(xlabel="step", ylabel="gradient norm (log)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        figs.append(_fig(fig, "Gradient norm over time, the threshold, clipped steps and events."))
        fig, ax = plots.figure(10, 2.6)
        width = max(10, len(v.steps) // 50)
        ax.plot(v.steps, _smooth([float(c) for c in v.clipped], width), color="#ff7f0e")
        ax.set(xlabel="step", ylabel=f"clip rate (last {width} steps)", ylim=(-0.02, 1.02))
        ax.grid(True, alpha=0.3)
        figs.append(_fig(fig, f"Fraction of steps clipped, over a {width}-step window."))
    if v.layers:
        import numpy as np

        names = sorted(v.layers)
        grid = np.array([[math.nan if x is None else x for x in v.layers[n]] for n in names])
        fig, ax = plots.figure(10, 1.2 + 0.35 * len(names))
        mesh = ax.imshow(
            np.log10(np.clip(grid, 1e-12, None)),
            aspect="auto",
            cmap="magma",
            extent=(v.steps[0], v.steps[-1], len(names) - 0.5, -0.5),
        )
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("step")
        fig.colorbar(mesh, ax=ax, label="log₁₀ layer norm")
        figs.append(_fig(fig, "Per-layer gradient norm (heat-map, log scale)."))
    if v.epochs:
        fig, ax = plots.figure(6.4, 3.2)
        for key in ("train_ppl", "valid_ppl"):
            ys = [_num_or_nan(e.get(key)) for e in v.epochs]
            ax.semilogy(range(1, len(ys) + 1), ys, "-o", label=key)
        ax.set(xlabel="epoch", ylabel="perplexity")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        figs.append(_fig(fig, "Perplexity per epoch."))
    return figs


def _num_or_nan(x: Any) -> float:
    return float(x) if isinstance(x, int | float) else math.nan


def _tasks_figures(v: RunView) -> list[dict[str, str]]:
    from gradclip.diagnostics.tasks.curriculum_summary import curriculum_figure
    from gradclip.diagnostics.tasks.grid import success_axes

    if v.curricula:
        text = "Curriculum: runs that solved each length; each run's longest length solved."
        return [_fig(curriculum_figure(v.curricula), text)]
    fig, (ax1, ax2) = plots.figure(10, 3.8, ncols=2)
    success_axes(ax1, v.task_results)
    for r in v.task_results:
        if r.config.seed == v.task_results[0].config.seed:
            label = f"{r.config.task} L={r.config.length_label} {r.config.method_label}"
            ax2.semilogy(r.curve_steps, _series(r.norms), lw=0.8, label=label)
    ax2.set(xlabel="step", ylabel="gradient norm (pre-clip)")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=6)
    return [_fig(fig, "Success rate against length; gradient norms of the first seed's runs.")]


def _profile_figures(v: RunView) -> list[dict[str, str]]:
    fig, ax = plots.figure(6.4, 4.0)
    plots.profile_axes(ax, [(v.name, v.profile)])
    return [_fig(fig, f"Temporal profile: {v.profile.verdict}. {v.profile.evidence}")]


def render_html(views: Sequence[RunView], title: str = "gradclip report", intro: str = "") -> str:
    """The report page for ``views`` (see :func:`write_report`).

    Args:
        views: from :func:`~gradclip.diagnostics.report.sources.read_view`.
        title: the page title.
        intro: an optional paragraph shown at the top.

    Returns:
        The HTML text.

    Example:
        >>> page = render_html([])
        >>> page.startswith("<!DOCTYPE html>"), "<script" in page
        (True, False)
    """
    import jinja2

    from gradclip import __version__

    rendered = []
    for v in views:
        figs = {"tasks": _tasks_figures, "profile": _profile_figures}.get(v.kind, _train_figures)(v)
        figs += [{"src": src, "caption": cap} for cap, src in v.images]
        rendered.append({**vars(v), "figures": figs})
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(_TEMPLATE).render(
        title=title,
        intro=intro,
        views=rendered,
        overview=_overview(views) if len(views) > 1 else [],
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        version=html.escape(__version__),
    )


def write_report(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    title: str = "gradclip report",
    intro: str = "",
) -> Path:
    """Write ONE self-contained HTML report of ``run_dirs`` to ``out``, atomically.

    Every folder is read first, so a bad one raises before anything is written. Figures:
    loss and gradient norm of all runs overlaid; per run, the norm over time with the
    threshold, clipped steps and monitor events, the clip rate, a per-layer heat-map,
    perplexity per epoch, the temporal profile, the tasks' success against length, and
    the PNGs a sweep or suggest folder holds.

    Args:
        run_dirs: train, sweep, suggest, tasks or profile folders (at least one).
        out: the HTML file to write; its folder must exist.
        title: the page title.
        intro: an optional paragraph for the top of the page.

    Returns:
        The path written.

    Example:
        >>> write_report([], "r.html")
        Traceback (most recent call last):
        ...
        gradclip.errors.UserError: report needs at least one run directory
    """
    from gradclip.errors import UserError
    from gradclip.lm.rundir import atomic_write_bytes

    if not run_dirs:
        raise UserError("report needs at least one run directory")
    out = Path(out)
    if not out.parent.is_dir():
        raise UserError(f"folder of the output file does not exist: {out.parent}")
    views = [read_view(p) for p in run_dirs]
    atomic_write_bytes(out, render_html(views, title, intro).encode("utf-8"))
    return out
