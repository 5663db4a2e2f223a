r"""Event detection on the host, over the values a flush reads back.

Three kinds of event, each a plain dict record (``"kind": "event"``):

* ``explosion``: after ``warmup`` finite norms, the global norm exceeds
  ``explode_factor`` × the median of the last ``window`` finite norms,
  :math:`n_t > k \cdot \mathrm{median}(n_{t-w} \dots n_{t-1})`. The median (not
  the mean) so that one spike does not raise the bar for the next.
* ``vanishing``: a layer's norm stays below ``vanish_floor``, or below its own
  running geometric mean divided by ``vanish_factor``, for ``vanish_patience``
  consecutive steps (one event when the condition starts).
* ``nonfinite``: the global norm is NaN or inf; the event names the first
  parameter (in the optimizer's order) whose gradient norm is not finite.

The detector sees only numbers, so it is tested on synthetic sequences.
"""

from __future__ import annotations

import bisect
import collections
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["EventDetector", "EventRules"]

Record = dict[str, Any]


@dataclass(frozen=True)
class EventRules:
    """Thresholds of the three detectors (see the module docstring).

    Args:
        explode_factor: ``k`` of the explosion rule (> 1).
        window: how many recent finite norms the running median covers.
        warmup: finite norms seen before the explosion rule can fire.
        vanish_floor: absolute floor of a layer's norm.
        vanish_factor: collapse factor against the layer's running geometric mean.
        vanish_patience: consecutive steps a layer must stay low.
        ema: decay of the layer's running mean of ``log(norm)``.

    Example:
        >>> EventRules(explode_factor=5.0).window
        100
    """

    explode_factor: float = 5.0
    window: int = 100
    warmup: int = 20
    vanish_floor: float = 1e-8
    vanish_factor: float = 1e3
    vanish_patience: int = 10
    ema: float = 0.98

    def __post_init__(self) -> None:
        if not self.explode_factor > 1:
            raise ValueError(f"explode_factor must be > 1, got {self.explode_factor!r}")
        for name in ("window", "warmup", "vanish_patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.warmup > self.window:
            raise ValueError(f"warmup ({self.warmup}) must not exceed window ({self.window})")
        if not self.vanish_floor >= 0 or not self.vanish_factor > 1:
            raise ValueError("vanish_floor must be >= 0 and vanish_factor > 1")
        if not 0 < self.ema < 1:
            raise ValueError(f"ema must be in (0, 1), got {self.ema!r}")


class _Layer:
    __slots__ = ("count", "log_mean", "low", "seen")

    def __init__(self) -> None:
        self.log_mean = 0.0
        self.seen = 0
        self.low = 0
        self.count = 0  # vanishing events


class EventDetector:
    """Stateful detector: feed it one step at a time with :meth:`update`.

    Args:
        rules: the thresholds.

    Example:
        >>> det = EventDetector(EventRules(warmup=3, window=10))
        >>> [e["event"] for s, n in enumerate([1.0, 1.1, 0.9, 1.0, 50.0])
        ...  for e in det.update(s, n, {}, ())]
        ['explosion']
    """

    def __init__(self, rules: EventRules):
        self.rules = rules
        self._recent: collections.deque[float] = collections.deque()
        self._sorted: list[float] = []
        self._layers: dict[str, _Layer] = {}

    def median(self) -> float:
        """The running median of the recent finite norms (NaN before any)."""
        s, n = self._sorted, len(self._sorted)
        if n == 0:
            return math.nan
        return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])

    def update(
        self,
        step: int,
        norm: float,
        layers: dict[str, float],
        nonfinite_names: Sequence[str],
    ) -> list[Record]:
        """Events of one step.

        Args:
            step: the optimizer step.
            norm: the global pre-clip norm.
            layers: layer name → layer norm.
            nonfinite_names: parameters whose norm is not finite, in order
                (only looked at when ``norm`` is not finite).

        Returns:
            The event records of this step (often none).
        """
        r = self.rules
        events: list[Record] = []
        if not math.isfinite(norm):
            first = nonfinite_names[0] if nonfinite_names else None
            what = "NaN" if math.isnan(norm) else "inf"
            where = f"; first non-finite gradient: {first}" if first else ""
            events.append(
                _event(
                    step,
                    "nonfinite",
                    f"gradient norm is {what}{where}",
                    value=norm,
                    parameter=first,
                )
            )
        else:
            med = self.median()
            if len(self._sorted) >= r.warmup and norm > r.explode_factor * med:
                events.append(
                    _event(
                        step,
                        "explosion",
                        f"gradient norm {norm:.4g} is {norm / med:.1f}x"
                        f" the running median {med:.4g}",
                        value=norm,
                        reference=med,
                    )
                )
            self._push(norm)
        for name, value in layers.items():
            ev = self._layer(step, name, value)
            if ev is not None:
                events.append(ev)
        return events

    def _push(self, norm: float) -> None:
        self._recent.append(norm)
        bisect.insort(self._sorted, norm)
        if len(self._recent) > self.rules.window:
            old = self._recent.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]

    def _layer(self, step: int, name: str, value: float) -> Record | None:
        r = self.rules
        st = self._layers.get(name)
        if st is None:
            st = self._layers[name] = _Layer()
        if not math.isfinite(value):
            return None
        ref = math.exp(st.log_mean) if st.seen >= r.warmup else math.inf
        low = value <= r.vanish_floor or (math.isfinite(ref) and value < ref / r.vanish_factor)
        st.low = st.low + 1 if low else 0
        event = None
        if st.low == r.vanish_patience:
            st.count += 1
            why = (
                f"below the floor {r.vanish_floor:.3g}"
                if value <= r.vanish_floor
                else f"{ref / max(value, 1e-300):.3g}x below its running mean {ref:.4g}"
            )
            event = _event(
                step,
                "vanishing",
                f"layer {name!r} norm {value:.4g} is {why} for {r.vanish_patience} steps",
                value=value,
                reference=None if math.isinf(ref) else ref,
                layer=name,
            )
        if not low:  # the reference follows healthy values only
            lv = math.log(max(value, 1e-300))
            st.log_mean = lv if st.seen == 0 else r.ema * st.log_mean + (1 - r.ema) * lv
            st.seen += 1
        return event


def _event(
    step: int,
    kind: str,
    message: str,
    *,
    value: float,
    reference: float | None = None,
    layer: str | None = None,
    parameter: str | None = None,
) -> Record:
    return {
        "kind": "event",
        "step": step,
        "event": kind,
        "message": f"step {step}: {message}",
        "value": value,
        "reference": reference,
        "layer": layer,
        "parameter": parameter,
    }
