r"""Clip and step in one call, fused into torch's fused optimizers.

:class:`ClippedOptimizer` wraps a ``torch.optim.Optimizer`` and a
:class:`~gradclip.clippers.Clipper`; :func:`clipped_step` is the one-shot form.

**Fused optimizers** (``SGD``/``Adam``/``AdamW`` with ``fused=True``): their
kernels read two optional attributes, ``optimizer.grad_scale`` (every gradient
is *divided* by it, and the divided gradient is written back to ``.grad``) and
``optimizer.found_inf`` (1.0 skips the whole update: parameters, momentum
buffers, Adam moments, and ``step`` counters stay as they were). A
global-scale clipper therefore costs one norm pass: ``grad_scale = 1/scale``
applies the clip inside the optimizer's own pass, and ``found_inf`` skips a
non-finite step without reading anything on the host.

**Fused plain SGD** (no momentum, no weight decay) needs not even that write:
the scale is folded into a tensor learning rate, ``θ ← θ − (lr·s)·g``, so the
clipped step reads each gradient twice (norm, update) and writes only the
parameters; ``.grad`` keeps the unclipped gradient.

**Other optimizers**: the clip is one foreach multiply (no sync). Skipping a
step (``nonfinite="skip"``) needs **one host sync** per step, to decide in
Python whether to call ``optimizer.step()``.

**Fused SGD with momentum, first step skipped**: torch allocates the momentum
buffers with ``empty_like`` before the kernel runs, so a skipped first step
leaves uninitialised memory that the next step reads as momentum (this bites
``GradScaler`` too). When a skip is possible, :class:`ClippedOptimizer`
pre-fills the buffers with zeros for groups with ``dampening == 0`` (bit-exact:
``0·μ + g = g``), and otherwise pays one host sync on the first step only to
drop the buffers again if the step was skipped.

**GradScaler**: pass ``scaler=`` to :meth:`ClippedOptimizer.step`. The
gradients are unscaled **before** the norm is taken, so the threshold applies
to true gradients, and the scaler then steps (and skips steps whose
gradients overflowed, whatever the clipper's ``nonfinite`` policy: an
overflow is the scaler's signal, so it is handled as ``"skip"``).

**What ``.grad`` holds after** :meth:`ClippedOptimizer.step`:

* fused optimizer with ``grad_scale`` (fused Adam/AdamW, fused SGD with
  momentum or weight decay): the **clipped** gradient (the kernel writes it back);
* fused plain SGD (scale folded into the learning rate): the **unclipped** gradient;
* any other optimizer (the foreach multiply): the **clipped** gradient;
* a skipped step (``nonfinite="skip"`` or a ``GradScaler`` overflow): the
  gradient as the clipper saw it, untouched (non-finite);
* the ``none`` clipper: unchanged; under ``GradScaler``: unscaled, then as above.

**Observers** (:meth:`ClippedOptimizer.add_observer`, see
:mod:`~gradclip.optim.observers`) receive each step's names, parameters,
gradients, the per-tensor norms the clipper computed and the ``ClipStats``,
before and after ``optimizer.step()``; with none attached nothing extra is built.
"""

from gradclip.optim.clipped import ClippedOptimizer, clipped_step
from gradclip.optim.fused import is_fused
from gradclip.optim.observers import StepObservation, StepObserver

__all__ = ["ClippedOptimizer", "StepObservation", "StepObserver", "clipped_step", "is_fused"]
