"""Running summary of a :class:`~gradclip.monitor.GradMonitor`: percentiles of
the global norm, clip and skip rates, the worst layers, event counts."""

from __future__ import annotations

import collections
import math
from typing import Any

__all__ = ["Summary", "percentile"]

PERCENTILES = (5, 10, 50, 90, 95, 99)


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q``-th percentile (linear interpolation, numpy's default) of sorted values.

    Args:
        sorted_values: ascending finite values.
        q: in ``[0, 100]``.

    Returns:
        The percentile, or NaN for no values.

    Example:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([1.0, 2.0, 3.0, 4.0], 10)
        (2.5, 1.3)
    """
    n = len(sorted_values)
    if n == 0:
        return math.nan
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


class Summary:
    """Accumulates step and event records (host values only).

    Example:
        >>> s = Summary()
        >>> for i, n in enumerate([1.0, 2.0, 3.0]):
        ...     rec = {"step": i, "norm": n, "clipped": n > 2, "skipped": False}
        ...     s.add(rec, [])
        >>> d = s.as_dict(); d["steps"], d["clip_rate"], d["norm_percentiles"]["p50"]
        (3, 0.3333333333333333, 2.0)
    """

    def __init__(self) -> None:
        self.norms: list[float] = []
        self.steps = 0
        self.clipped = 0
        self.skipped = 0
        self.nonfinite = 0
        self.layer_max: dict[str, float] = {}
        self.layer_sum: dict[str, float] = collections.defaultdict(float)
        self.layer_count: dict[str, int] = collections.defaultdict(int)
        self.events: collections.Counter[str] = collections.Counter()

    def add(self, record: dict[str, Any], events: list[dict[str, Any]]) -> None:
        """Count one step record and its events."""
        self.steps += 1
        n = record["norm"]
        if n is not None and math.isfinite(n):
            self.norms.append(n)
        else:
            self.nonfinite += 1
        self.clipped += bool(record["clipped"])
        self.skipped += bool(record["skipped"])
        for name, v in record.get("layers", {}).items():
            if math.isfinite(v):
                self.layer_max[name] = max(self.layer_max.get(name, -math.inf), v)
                self.layer_sum[name] += v
                self.layer_count[name] += 1
        if events:
            self.events.update(e["event"] for e in events)

    def as_dict(self, worst: int = 3) -> dict[str, Any]:
        """The summary as plain values.

        Returns:
            ``steps``, ``norm_percentiles`` (``p5 … p99``, ``max``, ``mean``),
            ``clip_rate``, ``skip_rate``, ``nonfinite_steps``,
            ``worst_layers`` (the ``worst`` layers with the largest peak norm:
            name, max, mean), ``events`` (count per kind).
        """
        s = sorted(self.norms)
        pct: dict[str, float] = {f"p{q}": percentile(s, q) for q in PERCENTILES}
        pct["max"] = s[-1] if s else math.nan
        pct["mean"] = sum(s) / len(s) if s else math.nan
        layers = sorted(self.layer_max, key=lambda k: -self.layer_max[k])[:worst]
        steps = max(self.steps, 1)
        return {
            "steps": self.steps,
            "norm_percentiles": pct,
            "clip_rate": self.clipped / steps,
            "skip_rate": self.skipped / steps,
            "nonfinite_steps": self.nonfinite,
            "worst_layers": [
                {
                    "layer": k,
                    "max": self.layer_max[k],
                    "mean": self.layer_sum[k] / self.layer_count[k],
                }
                for k in layers
            ],
            "events": dict(self.events),
        }
