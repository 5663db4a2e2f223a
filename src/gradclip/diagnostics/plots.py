"""Shared matplotlib helpers: Agg figures, atomic PNG writes, base64 for HTML.

matplotlib is imported inside the functions, so importing this module costs nothing
and no display is ever needed (the Agg backend renders to memory).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from gradclip.diagnostics.profile import TemporalProfile
    from gradclip.diagnostics.suggest import Suggestion
    from gradclip.diagnostics.sweep import SweepResult

__all__ = [
    "figure",
    "output_folder",
    "plot_norm_histogram",
    "plot_profile",
    "plot_sweep",
    "png_bytes",
    "png_data_uri",
    "profile_axes",
    "save",
    "sweep_axes",
]


def figure(width: float = 6.4, height: float = 4.0, ncols: int = 1) -> tuple[Figure, Any]:
    """A new Agg figure (no pyplot state) and its axes (an array when ``ncols > 1``).

    Args:
        width: inches.
        height: inches.
        ncols: side-by-side axes.

    Returns:
        ``(figure, axes)``.

    Example:
        >>> fig, ax = figure(2, 2)
        >>> len(png_bytes(fig)) > 100
        True
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols)
    return fig, axes


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """Render ``fig`` to PNG bytes (Agg).

    Args:
        fig: the figure.
        dpi: dots per inch.

    Returns:
        The PNG file's bytes.

    Example:
        >>> fig, ax = figure(1, 1)
        >>> png_bytes(fig)[:4]
        b'\\x89PNG'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def png_data_uri(fig: Figure, dpi: int = 110) -> str:
    """``data:image/png;base64,…`` of ``fig``, for an ``<img src>`` with no network.

    Args:
        fig: the figure.
        dpi: dots per inch.

    Returns:
        The data URI.

    Example:
        >>> png_data_uri(figure(1, 1)[0]).startswith("data:image/png;base64,iVBOR")
        True
    """
    return "data:image/png;base64," + base64.b64encode(png_bytes(fig, dpi)).decode("ascii")


def output_folder(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as a folder to write into: a :class:`~gradclip.errors.UserError` names
    ``flag`` when it is an existing file or its parent does not exist.

    Example:
        >>> output_folder(".").is_dir()
        True
    """
    from gradclip.errors import UserError

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{flag} {folder} exists and is not a folder")
    if not folder.exists() and not folder.parent.is_dir():
        raise UserError(f"{flag} {folder}: its parent folder does not exist")
    return folder


def save(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG, atomically (:func:`gradclip.lm.rundir.atomic_write_bytes`).

    Args:
        fig: the figure.
        path: the file to write.
        dpi: dots per inch.

    Returns:
        ``path``.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save(figure(1, 1)[0], pathlib.Path(d) / "f.png").stat().st_size > 0
        True
    """
    from gradclip.lm.rundir import atomic_write_bytes

    path = Path(path)
    atomic_write_bytes(path, png_bytes(fig, dpi))
    return path


def profile_axes(ax: Axes, profiles: Sequence[tuple[str, TemporalProfile]]) -> None:
    """Draw ``‖∂L_T/∂h_{T−k}‖`` (solid) and ``‖∂h_T/∂h_{T−k}‖₂`` (dashed) on a log scale.

    Args:
        ax: matplotlib axes.
        profiles: ``(label, TemporalProfile)`` pairs.

    Example:
        >>> import torch
        >>> from gradclip.diagnostics.profile import temporal_profile
        >>> fig, ax = figure(3, 2)
        >>> profile_axes(ax, [("rnn", temporal_profile(torch.nn.RNN(2, 3), torch.ones(4, 1, 2)))])
        >>> len(ax.lines)
        2
    """
    for label, prof in profiles:
        (line,) = ax.semilogy(
            prof.steps_back, prof.grad_norms, "-", label=f"{label}: ‖∂L_T/∂h_t‖ ({prof.verdict})"
        )
        if prof.jacobian_norms is not None:
            ax.semilogy(
                prof.steps_back,
                prof.jacobian_norms,
                "--",
                color=line.get_color(),
                alpha=0.7,
                label=f"{label}: ‖∏ ∂h_k/∂h_(k−1)‖₂",
            )
    ax.set_xlabel("steps back from T (k = T − t)")
    ax.set_ylabel("norm (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def plot_profile(profiles: Sequence[tuple[str, TemporalProfile]], path: str | Path) -> Path:
    """Write the temporal profile(s) as a log-scale PNG.

    Args:
        profiles: ``(label, TemporalProfile)`` pairs.
        path: the PNG to write (atomically).

    Returns:
        The path written.
    """
    fig, ax = figure(6.4, 4.0)
    profile_axes(ax, profiles)
    ax.set_title("How much of the last step's loss gradient reaches step t", fontsize=9)
    return save(fig, path)


def plot_norm_histogram(suggestion: Suggestion, path: str | Path, *, title: str = "") -> Path:
    """Histogram of the norms on a log axis, with each rule's threshold marked.

    Args:
        suggestion: from :func:`~gradclip.diagnostics.suggest.suggest` or
            :func:`~gradclip.diagnostics.suggest.suggest_from_norms`.
        path: the PNG to write (atomically).
        title: figure title.

    Returns:
        ``path``.
    """
    import numpy as np

    finite = np.array([n for n in suggestion.norms if math.isfinite(n) and n > 0])
    fig, ax = figure(7.0, 4.2)
    lo, hi = float(finite.min()), float(finite.max())
    marks = [r for r in suggestion.rules if math.isfinite(r.threshold) and r.threshold > 0]
    lo = min([lo, *(r.threshold for r in marks)])
    hi = max([hi, *(r.threshold for r in marks)])
    bins = np.logspace(math.log10(lo) - 0.05, math.log10(hi) + 0.05, 50)
    ax.hist(finite, bins=bins, color="0.6", edgecolor="0.3")
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on short ranges
    colors = ["C0", "C1", "C2", "C3", "C4", "C5", "C6"]
    for r, color in zip(marks, colors, strict=False):
        width = 2.5 if r.name == suggestion.rule else 1.2
        label = f"{r.name} = {r.threshold:.3g} (clips {r.clip_fraction:.0%})"
        if r.name == suggestion.rule:
            label += "  <- recommended"
        ax.axvline(r.threshold, color=color, linewidth=width, linestyle="--", label=label)
    ax.set_xlabel("global gradient norm before clipping (log scale)")
    ax.set_ylabel("steps")
    how = "unclipped" if suggestion.measured_clip is None else "pre-clip"
    ax.set_title(title or f"Gradient norms over {len(suggestion.norms)} steps ({how})")
    ax.legend(fontsize=7, loc="upper right")
    return save(fig, path)


def plot_sweep(result: SweepResult, path: str | Path) -> Path:
    """A sweep's validation perplexity against threshold (log x), one line per method:
    the mean over seeds, each seed a faint dot (their spread is the noise floor), diverged
    settings as × at the top; methods without a threshold as horizontal lines
    (:func:`sweep_axes`).

    Args:
        result: the :class:`~gradclip.diagnostics.sweep.SweepResult`.
        path: the PNG to write.

    Returns:
        ``path``.
    """
    fig, ax = figure(7.0, 4.2)
    sweep_axes(ax, result)
    return save(fig, path)


# Perplexities spanning more than this ratio are drawn on a log axis: a setting that
# blew up (perplexity 1e20, still finite) would otherwise flatten every other point.
LOG_Y_SPAN = 30.0


def sweep_axes(ax: Axes, result: SweepResult) -> None:
    """Draw :func:`plot_sweep`'s chart on ``ax``. On a linear axis a seed over 2 × the
    median cell is drawn as ^ on the top edge, labelled with its value; when the cells
    span more than :data:`LOG_Y_SPAN` × the axis is logarithmic and shows them all."""
    from matplotlib.ticker import FuncFormatter, NullLocator

    finite = [r["valid_ppl"] for r in result.rows if math.isfinite(r["valid_ppl"] or math.inf)]
    log_y = bool(finite) and min(finite) > 0 and max(finite) > LOG_Y_SPAN * min(finite)
    cap = 2 * sorted(finite)[len(finite) // 2] if finite and not log_y else math.inf
    all_means = result.means()
    finite_means = [m["valid_ppl"] for m in all_means if math.isfinite(m["valid_ppl"])]
    top = max([x for x in finite + finite_means if x <= cap], default=1.0)
    top *= 2.0 if log_y else 1.08
    methods = list(dict.fromkeys(r["method"] for r in result.rows))
    ticks: set[float] = set()
    for i, method in enumerate(methods):
        rows = [r for r in result.rows if r["method"] == method]
        color = f"C{i % 10}"
        means = [m for m in all_means if m["method"] == method]
        if means[0]["threshold"] is None:
            mean = means[0]["valid_ppl"]
            if math.isfinite(mean):
                ax.axhline(min(mean, top), color=color, ls="--", label=method)
            else:
                ax.axhline(top, color=color, ls=":", label=f"{method} (diverged)")
            continue
        points = sorted((m["threshold"], m["valid_ppl"], m["diverged"]) for m in means)
        xs = [t for t, _, _ in points]
        ys = [min(y, top) for _, y, _ in points]
        ticks.update(xs)
        bad = [t for t, _, n in points if n]
        for t in xs:  # the seeds behind the mean: their spread is the noise floor
            ok = [r["valid_ppl"] for r in rows if r["threshold"] == t]
            ok = [x for x in ok if math.isfinite(x or math.inf)]
            if len(ok) > 1:
                ax.plot([t] * len(ok), [min(x, top) for x in ok], ".", color=color, alpha=0.35)
            off = sorted(x for x in ok if x > top)
            if off:  # one marker and one label per threshold, however many seeds
                ax.plot([t], [top], "^", color=color, ms=7)
                label = " / ".join(f"{x:,.0f}" for x in off)
                ax.annotate(label, (t, top), textcoords="offset points", xytext=(-6, -3),
                            ha="right", va="top", fontsize=7, color=color)  # fmt: skip
        ax.plot(xs, ys, marker="o", color=color, label=method)
        if bad:
            ax.plot(bad, [top] * len(bad), "x", color=color, ms=9)
    ax.set_xscale("log")
    if ticks:  # the grid's own thresholds, written plainly
        ax.xaxis.set_minor_locator(NullLocator())
        shown: list[float] = []
        for t in sorted(ticks):  # labels closer than 15 % would overlap on the log axis
            if not shown or t > 1.15 * shown[-1]:
                shown.append(t)
        ax.set_xticks(shown)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    if log_y:
        ax.set_yscale("log")
    ax.set_ylim(top=top * 1.03)
    ax.set_xlabel("threshold (log scale)")
    ax.set_ylabel("validation perplexity" + (" (log scale)" if log_y else ""))
    marks = "x: diverged" + ("" if log_y else ", ^: off the scale")
    ax.set_title(f"validation perplexity vs clipping threshold ({marks})")
    ax.legend(fontsize=8, loc="upper left")
