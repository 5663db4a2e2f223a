"""``gradclip report RUN_DIR... -o report.html``: one self-contained HTML page.

Any mix of gradclip folders: a training run, a sweep, ``suggest --out``, ``tasks``
or ``profile``. Several folders are overlaid for comparison. Figures are PNGs
embedded in the page (no network, no script); the file is written atomically.
"""

from __future__ import annotations

import argparse

from gradclip.cli.flags import add_command
from gradclip.diagnostics.report import write_report


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = add_command(
        subparsers,
        "report",
        "one self-contained HTML report of run/sweep/tasks/profile folders",
        (__doc__ or "").replace("``", ""),
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="folders to report")
    p.add_argument("-o", "--out", default="report.html", metavar="HTML", help="the file to write")
    p.add_argument("--title", default="gradclip report", help="page title")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    """Write the report and print its path; return 0."""
    out = write_report(args.run_dirs, args.out, title=args.title)
    print(f"wrote {out}")
    return 0
