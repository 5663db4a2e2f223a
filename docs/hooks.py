"""Docs build glue: the docstrings' reST habits, rendered by mkdocstrings (Google style).

Loaded twice by `mkdocs.yml`: as an mkdocs hook (``on_page_content``) and as a griffe
extension (``ReSTHabits``). Nothing here changes what a docstring says; it only keeps
the strict build from tripping over reST that Markdown does not know:

- ``Example:`` becomes ``Examples:``, so doctest lines render as code (Napoleon accepts
  both spellings; griffe knows only the plural and would read the doctest as prose).
- ``.. math::`` blocks become fenced LaTeX code blocks instead of run-on prose.
- Sphinx roles (:class:`ClipStats`) become optional cross-references: a link when the
  target is rendered (tried as written, then in the flat ``gradclip`` namespace), plain
  code otherwise, never a warning.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object, ObjectNode

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)
_MATH = re.compile(r"^(\s*)\.\. math::[ \t]*(.*)$")
_ROLE = re.compile(
    r":(?:py:)?(?:class|func|meth|mod|attr|data|obj|exc|const|type):<code>(~?)\.?([\w.]+)</code>"
)


def _deeper(line: str, indent: str) -> bool:
    return bool(line.strip()) and len(line) - len(line.lstrip()) > len(indent)


def _blank_inside(lines: list[str], i: int, indent: str) -> bool:
    return not lines[i].strip() and i + 1 < len(lines) and _deeper(lines[i + 1], indent)


def _fence_math(text: str) -> str:
    """Turn each reST ``.. math::`` directive into a fenced ``latex`` block."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        m = _MATH.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent, first = m.groups()
        body = [first] if first.strip() else []
        i += 1
        # The directive's body: the lines indented past it, blank lines between them included.
        while i < len(lines) and (_deeper(lines[i], indent) or _blank_inside(lines, i, indent)):
            body.append(lines[i].strip())
            i += 1
        out += [f"{indent}```latex", *(f"{indent}{b}" for b in body), f"{indent}```"]
    return "\n".join(out)


class ReSTHabits(Extension):
    """Griffe extension: normalise each docstring before mkdocstrings parses it."""

    def on_instance(self, *, node: ObjectNode | Any, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            text = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _fence_math(text) if ".. math::" in text else text


def _autoref(match: re.Match[str]) -> str:
    tilde, name = match.groups()
    shown = name.rsplit(".", 1)[-1] if tilde else name
    fallback = "gradclip." + name.rsplit(".", 1)[-1]
    return f'<autoref identifier="{name}" slug="{fallback}" optional><code>{shown}</code></autoref>'


def on_page_content(html: str, **kwargs: Any) -> str:
    """mkdocs hook: Sphinx roles become optional cross-references (see above)."""
    return _ROLE.sub(_autoref, html)
