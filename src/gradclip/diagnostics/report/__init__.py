"""``gradclip report``: one self-contained HTML page for any gradclip output folders.

Example:
    >>> from gradclip.diagnostics.report import write_report
    >>> callable(write_report)
    True
"""

from gradclip.diagnostics.report.render import render_html, write_report
from gradclip.diagnostics.report.sources import RunView, read_view

__all__ = ["RunView", "read_view", "render_html", "write_report"]
