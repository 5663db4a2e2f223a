"""``gradclip cliff``: Pascanu's cliff, drawn, with and without clipping.

The single-unit RNN ``x_t = w·σ(x_{t−1}) + b``, ``x_0 = 0.5``, ``E = (σ(x_50) − 0.7)²``
(Pascanu, Mikolov & Bengio 2013, §2.3, Fig. 6). Plain gradient descent and the same
descent clipped to ``--clip`` start from the same point; the PNG shows ``log E`` over
``(w, b)`` and both trajectories: at the wall the unclipped step jumps far away, the
clipped one moves at most ``lr·clip``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from gradclip.cli.flags import add_command, positive_float, positive_int
from gradclip.diagnostics.cliff import cliff_surface, descend, plot_cliff


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = add_command(
        subparsers,
        "cliff",
        "draw Pascanu's cliff and descents with/without clipping",
        (__doc__ or "").replace("``", ""),
    )
    p.add_argument("--w0", type=float, default=6.0, help="starting recurrent weight w")
    p.add_argument("--b0", type=float, default=-3.0, help="starting bias b")
    p.add_argument("--lr", type=positive_float, default=0.5, help="learning rate")
    p.add_argument("--steps", type=positive_int, default=200, help="gradient-descent steps")
    p.add_argument("--clip", type=positive_float, default=1.0, help="global-norm threshold")
    p.add_argument("--grid", type=positive_int, default=201, help="surface points per axis")
    p.add_argument("-o", "--out", default="cliff.png", metavar="PNG", help="the PNG to write")
    p.set_defaults(func=run_cliff)


def run_cliff(args: argparse.Namespace) -> int:
    """Descend both ways, draw, print a two-line summary; return 0."""
    from gradclip.errors import UserError

    if not (math.isfinite(args.w0) and math.isfinite(args.b0)):
        raise UserError(f"--w0/--b0 must be finite, got {args.w0}, {args.b0}")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise UserError(f"folder of --out does not exist: {out.parent}")
    plain = descend(args.w0, args.b0, args.lr, args.steps)
    clipped = descend(args.w0, args.b0, args.lr, args.steps, clip=args.clip)
    ws = [*plain.w, *clipped.w, args.w0]
    bs = [*plain.b, *clipped.b, args.b0]
    finite = [(w, b) for w, b in zip(ws, bs, strict=True) if math.isfinite(w) and math.isfinite(b)]
    w_lo, w_hi = min(-2.0, *(w for w, _ in finite)) - 0.5, max(10.0, *(w for w, _ in finite)) + 0.5
    b_lo, b_hi = min(-6.0, *(b for _, b in finite)) - 0.5, max(2.0, *(b for _, b in finite)) + 0.5
    surface = cliff_surface((w_lo, w_hi), (b_lo, b_hi), args.grid)
    plot_cliff(surface, [("no clipping", plain), (f"clipped at {args.clip:g}", clipped)], out)
    for label, tr in (("no clipping", plain), (f"clip {args.clip:g}", clipped)):
        print(
            f"{label:<12} final loss {tr.losses[-1]:.3g}  (w, b) = ({tr.w[-1]:.3f}, {tr.b[-1]:.3f})"
            f"  largest norm {max(tr.norms):.3g}  longest step {max(tr.step_lengths):.3g}"
        )
    print(f"wrote {out}")
    return 0
