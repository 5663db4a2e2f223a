r"""``GradMonitor``: per-step gradient statistics, per-layer norms and events.

Once per optimizer step (not per micro-batch) the monitor keeps, on the device:
the global pre-clip norm ``n``, the post-clip norm, the clip coefficient
``s = clipped_norm / n``, the threshold, the clipped/skipped/finite flags, the
per-tensor norms (from which the per-layer norms are combined at flush time),
and every ``update_ratio_every`` steps the per-tensor ``‖Δθ‖`` and ``‖θ‖`` for
the update-to-weight ratio

.. math:: r_L = \frac{\lVert θ_L^{t+1} - θ_L^{t} \rVert_2}{\lVert θ_L^{t} \rVert_2}.

Nothing is read on the host until :meth:`GradMonitor.flush` (every
``flush_every`` steps, or when called): one ``.cpu()`` of one concatenated
buffer, then records, events and sinks on the host.

Attached to a :class:`~gradclip.optim.ClippedOptimizer` (``monitor.attach(opt)``)
it reads the norms the clipper already computed, after ``GradScaler``
unscaling. In a plain loop, ``monitor.observe(model.named_parameters())``
after ``backward()`` computes the per-tensor norms itself (one pass).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from gradclip.monitor.events import EventDetector, EventRules
from gradclip.monitor.grouping import GroupBy, Grouping, default_group_by, named_tensors
from gradclip.monitor.records import HEAD, STATS, step_record
from gradclip.monitor.sinks import MemorySink, Sink
from gradclip.monitor.summary import Summary
from gradclip.ops import tensor_norms

__all__ = ["GradMonitor", "GradMonitorWarning"]

Record = dict[str, Any]


class GradMonitorWarning(UserWarning):
    """The one-line warning a :class:`GradMonitor` event raises (rate-limited)."""


class GradMonitor:
    r"""Watch gradients once per optimizer step: norms, per-layer norms, events.

    Records a step record per step and an event record per event (see
    :mod:`gradclip.monitor`), written to ``sinks`` at each flush. Events:
    explosion (norm > ``explode_factor`` × running median), vanishing layers,
    non-finite gradients (naming the first bad parameter); each also raises a
    :class:`GradMonitorWarning`, at most once per ``warn_every`` steps per kind.

    Unlike ``wandb.watch`` (per micro-batch, AMP-scaled) and Lightning's
    ``grad_norm`` (one sync per parameter), it logs once per optimizer step,
    after unscaling, with one host read per flush.

    Args:
        model_or_named_params: a module or ``(name, parameter)`` pairs; gives
            names to the optimizer's parameters and the default for :meth:`observe`.
        group_by: parameter name → layer name (default: the module prefix).
        sinks: where records go (default: one :class:`MemorySink`).
        norm_type: order of the norms computed in :meth:`observe`.
        flush_every: steps between automatic flushes.
        update_ratio_every: measure ``‖Δθ‖/‖θ‖`` every this many steps (0: never).
        explode_factor: explosion when the norm exceeds this × the running median.
        window: steps in the running median.
        warmup: finite norms seen before an explosion can be flagged.
        vanish_floor: a layer norm at or below this is "vanishing".
        vanish_factor: so is one this many times below the layer's running mean.
        vanish_patience: consecutive low steps before a vanishing event.
        warn: raise warnings for events.
        warn_every: minimum steps between two warnings of the same kind.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
        >>> monitor = GradMonitor(model)
        >>> model(torch.ones(4, 3)).sum().backward()
        >>> monitor.observe()
        >>> monitor.flush()
        >>> rec = monitor.records[0]
        >>> sorted(rec["layers"]), rec["norm"] > 0, rec["clipped"]
        (['0', '1'], True, False)
    """

    def __init__(
        self,
        model_or_named_params: torch.nn.Module | Iterable[tuple[str, Tensor]] | None = None,
        *,
        group_by: GroupBy = default_group_by,
        sinks: Iterable[Sink] | None = None,
        norm_type: float = 2.0,
        flush_every: int = 50,
        update_ratio_every: int = 100,
        explode_factor: float = 5.0,
        window: int = 100,
        warmup: int = 20,
        vanish_floor: float = 1e-8,
        vanish_factor: float = 1e3,
        vanish_patience: int = 10,
        warn: bool = True,
        warn_every: int = 100,
    ):
        if isinstance(model_or_named_params, torch.nn.Module):
            named: list[tuple[str, Tensor]] = list(model_or_named_params.named_parameters())
        elif model_or_named_params is None:
            named = []
        else:
            named = named_tensors(model_or_named_params)
        self._named = named
        self._names = {id(p): n for n, p in named}
        if not callable(group_by):
            raise TypeError("group_by must be callable (str -> str)")
        self.group_by = group_by
        self.sinks: list[Sink] = [MemorySink()] if sinks is None else list(sinks)
        self.norm_type = float(norm_type)
        for name, value, low in (
            ("flush_every", flush_every, 1),
            ("update_ratio_every", update_ratio_every, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        self.flush_every = flush_every
        self.update_ratio_every = update_ratio_every
        self.rules = EventRules(
            explode_factor=explode_factor,
            window=window,
            warmup=warmup,
            vanish_floor=vanish_floor,
            vanish_factor=vanish_factor,
            vanish_patience=vanish_patience,
        )
        self.detector = EventDetector(self.rules)
        self.warn = warn
        self.warn_every = warn_every
        self.events: list[Record] = []
        self.stats = Summary()
        self._groupings: dict[tuple[str, ...], Grouping] = {}
        self._rows: list[Tensor] = []
        self._meta: list[tuple[int, tuple[str, ...], float | None, bool]] = []
        self._updates: dict[int, Tensor] = {}  # buffer position -> [‖Δθ_i‖..., ‖θ_i‖...]
        self._snapshot: tuple[int, list[Tensor], list[Tensor]] | None = None
        self._steps = 0
        self._last_warned: dict[str, int] = {}
        self._handles: list[Any] = []
        self._seam_norm_type: float | None = self.norm_type
        self._seam_skips = False
        self._seam_row: Tensor | None = None  # the row before_step pushed, until after_step

    # ------------------------------------------------------------------ wiring
    def attach(self, optimizer: Any) -> Any:
        """Observe every step of a :class:`~gradclip.optim.ClippedOptimizer`.

        Args:
            optimizer: anything with ``add_observer(observer) -> handle``.

        Returns:
            The handle; ``handle.remove()`` detaches.
        """
        clipper = getattr(optimizer, "clipper", None)
        if clipper is not None:  # the seam's per-tensor norms are in the clipper's order p
            p = (
                2.0
                if getattr(clipper, "name", "") == "agc"
                else getattr(clipper, "norm_type", None)
            )
            self._seam_norm_type = None if p is None else float(p)
            self._seam_skips = getattr(clipper, "nonfinite", "") == "skip"
        handle = optimizer.add_observer(self)
        self._handles.append(handle)
        return handle

    def detach(self) -> None:
        """Remove every observer registration made by :meth:`attach`."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _resolve(self, names: Iterable[str], params: Iterable[Tensor | None]) -> tuple[str, ...]:
        out = []
        for i, (name, p) in enumerate(zip(names, params, strict=False)):
            if p is not None and id(p) in self._names:
                out.append(self._names[id(p)])
            else:
                out.append(name or f"param{i}")
        return tuple(out)

    # ------------------------------------------------------------------ the seam
    def before_step(self, obs: Any) -> None:
        """Observer hook: the step's clip is done, the parameters are not yet updated.

        Reads ``obs.step``, ``obs.names``, ``obs.params``, ``obs.grads``,
        ``obs.tensor_norms`` (computed here when ``None``) and ``obs.stats``.
        """
        params = list(obs.params)
        names = self._resolve(obs.names or [""] * len(params), params)
        norms = obs.tensor_norms
        if norms is None or self._seam_norm_type != self.norm_type:
            norms = tensor_norms(list(obs.grads), self.norm_type)
        s = obs.stats
        head = [getattr(s, f) for f in STATS]
        # provisional "skipped" (the skip policy's rule); after_step writes the optimizer's own
        head.append(~s.finite if self._seam_skips else torch.zeros_like(s.finite))
        dev = norms.device
        row = torch.cat([torch.stack([h.to(dev) for h in head]).to(torch.float32), norms.float()])
        self._push(int(obs.step), names, row, None, True, [p for p in params if p is not None])
        self._seam_row = row

    def after_step(self, obs: Any = None) -> None:
        """Observer hook: the optimizer has stepped; records ``obs.skipped`` (whether
        it skipped the update, e.g. a ``GradScaler`` overflow; written on the
        device, no sync) and completes the update ratio."""
        row, self._seam_row = self._seam_row, None
        skipped = getattr(obs, "skipped", None)
        if row is not None and skipped is not None:
            row[HEAD - 1].copy_(skipped)
        self._finish_update()
        if len(self._rows) >= self.flush_every:
            self.flush()

    # ------------------------------------------------------------------ plain loops
    def observe(
        self,
        parameters: Iterable[Any] | None = None,
        *,
        max_norm: float | None = None,
        step: int | None = None,
    ) -> None:
        """Record one step from the gradients, in a loop without ``ClippedOptimizer``.

        Call once per optimizer step, after ``backward()`` (and after
        ``scaler.unscale_(optimizer)`` under AMP), before ``optimizer.step()``.
        The update ratio of this step is measured at the next ``observe`` or
        :meth:`flush`, so call :meth:`flush` after the last ``optimizer.step()``.

        Args:
            parameters: parameters or ``(name, parameter)`` pairs (default: the
                constructor's). An empty iterable or one without gradients
                warns: the clip you are about to make would do nothing.
            max_norm: the threshold of a ``torch.nn.utils.clip_grad_norm_`` you
                apply yourself; the record then shows what it did (torch's rule
                ``coef = min(1, max_norm / (n + 1e-6))``).
            step: the step number (default: a counter).
        """
        self._finish_update()
        if len(self._rows) >= self.flush_every:
            self.flush()
        named = self._named if parameters is None else named_tensors(parameters)
        if not named:
            warnings.warn(
                "GradMonitor.observe got no parameters: an exhausted generator "
                "(model.parameters() iterated twice)?",
                GradMonitorWarning,
                stacklevel=2,
            )
            return
        with_grad = [(n, p) for n, p in named if p.grad is not None]
        if not with_grad:
            warnings.warn(
                f"GradMonitor.observe: none of the {len(named)} parameters has a .grad "
                "(gradients passed where parameters were expected, or no backward yet?)",
                GradMonitorWarning,
                stacklevel=2,
            )
            return
        names = self._resolve([n for n, _ in with_grad], [p for _, p in with_grad])
        grads = [p.grad for _, p in with_grad]
        norms = tensor_norms(grads, self.norm_type).float()
        head = torch.full((HEAD,), math.nan, dtype=torch.float32, device=norms.device)
        row = torch.cat([head, norms])
        s = self._steps if step is None else int(step)
        self._push(s, names, row, max_norm, False, [p for _, p in with_grad])

    # ------------------------------------------------------------------ buffer
    def _push(
        self,
        step: int,
        names: tuple[str, ...],
        row: Tensor,
        max_norm: float | None,
        has_stats: bool,
        params: list[Tensor],
    ) -> None:
        pos = len(self._rows)
        self._rows.append(row)
        self._meta.append((step, names, max_norm, has_stats))
        self._steps += 1
        every = self.update_ratio_every
        if every and step % every == 0:
            detached = [p.detach() for p in params]
            self._snapshot = (pos, detached, list(torch._foreach_mul(detached, 1.0)))

    def _finish_update(self) -> None:
        if self._snapshot is None:
            return
        pos, params, old = self._snapshot
        self._snapshot = None
        delta = torch._foreach_sub(params, old)
        both = torch.cat([tensor_norms(delta, 2.0), tensor_norms(old, 2.0)])
        self._updates[pos] = both.float()

    def flush(self) -> None:
        """Read the buffered steps (one host read), detect events, write the sinks."""
        self._finish_update()
        if not self._rows:
            return
        rows, meta, updates = self._rows, self._meta, self._updates
        self._rows, self._meta, self._updates = [], [], {}
        order = sorted(updates)
        dev = rows[0].device
        host = torch.cat([r.to(dev) for r in rows] + [updates[k].to(dev) for k in order]).cpu()
        host = host.to(torch.float64)
        off = 0
        records: list[Record] = []
        sizes = [r.numel() for r in rows]
        starts = []
        for n in sizes:
            starts.append(off)
            off += n
        upd_at = {}
        for k in order:
            upd_at[k] = off
            off += updates[k].numel()
        values = host.tolist()
        for i, (step, names, max_norm, has_stats) in enumerate(meta):
            a = starts[i]
            tn = host[a + HEAD : a + sizes[i]]
            upd = host[upd_at[i] : upd_at[i] + 2 * len(names)] if i in upd_at else None
            rec = step_record(
                step, values[a : a + HEAD], tn, self._grouping(names), self.norm_type,
                max_norm=max_norm, has_stats=has_stats, update=upd,
            )  # fmt: skip
            bad: list[str] = []
            if not rec["finite"]:  # lazily: who turned non-finite
                bad = [names[j] for j, v in enumerate(tn.tolist()) if not math.isfinite(v)]
            events = self.detector.update(step, rec["norm"], rec["layers"], bad)
            self.stats.add(rec, events)
            records.append(rec)
            for ev in events:
                self._warn(ev)
                self.events.append(ev)
                records.append(ev)
        for sink in self.sinks:
            sink.write(records)

    def _grouping(self, names: tuple[str, ...]) -> Grouping:
        g = self._groupings.get(names)
        if g is None:
            g = self._groupings[names] = Grouping(names, self.group_by)
        return g

    def _warn(self, event: Record) -> None:
        kind = event["event"]
        last = self._last_warned.get(kind)
        if not self.warn or (last is not None and event["step"] - last < self.warn_every):
            return
        self._last_warned[kind] = event["step"]
        warnings.warn(f"gradclip: {event['message']}", GradMonitorWarning, stacklevel=3)

    # ------------------------------------------------------------------ results
    @property
    def records(self) -> list[Record]:
        """The records of the first :class:`MemorySink` (empty when there is none)."""
        for sink in self.sinks:
            if isinstance(sink, MemorySink):
                return sink.records
        return []

    def summary(self) -> dict[str, Any]:
        """Flush, then summarise every step seen: see :meth:`Summary.as_dict`."""
        self.flush()
        return self.stats.as_dict()

    def close(self) -> None:
        """Flush, detach and close the sinks."""
        self.flush()
        self.detach()
        for sink in self.sinks:
            sink.close()

    def __enter__(self) -> GradMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
