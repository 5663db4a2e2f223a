"""The README and docs/: the site builds strictly, examples run, links resolve, and nothing
points outside the repository.

The strict build (the same as `make docs`) checks the links between docs pages and renders
every `::: module` of the API reference from the docstrings: a docstring mkdocstrings
cannot parse fails here, in the suite everyone runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
# Text a user's clone cannot follow: the project's shared folder, or a machine's own paths.
OUTSIDE = re.compile(r"shared/|(?<![\w.~])/(?:work|root|home|Users|mnt|opt)/")
LINK = re.compile(r"\]\(([^)\s]+)\)")
# Public packages with no API page, and why.
NO_API_PAGE = {"cli": "the command line is documented by `gradclip --help`"}


def test_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocstrings", reason="the docs extra is not installed")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}{done.stderr}"
    assert (tmp_path / "api" / "gradclip" / "index.html").is_file()


def python_blocks() -> list[tuple[str, str]]:
    blocks = []
    for doc in DOCS:
        for i, code in enumerate(BLOCK.findall(doc.read_text(encoding="utf-8"))):
            blocks.append((f"{doc.name}#{i}", code))
    return blocks


@pytest.mark.parametrize(("where", "code"), python_blocks(), ids=[w for w, _ in python_blocks()])
def test_doc_example_runs(where, code):
    exec(compile(code, where, "exec"), {"__name__": "__doc_example__"})


def user_facing_files() -> list[Path]:
    docs = [p for p in sorted((ROOT / "docs").rglob("*")) if p.is_file()]
    docs = [p for p in docs if "__pycache__" not in p.parts]
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "mkdocs.yml", *docs]


def test_outside_pattern_catches_what_it_should():
    assert OUTSIDE.search("see ../shared/reference/ptb-tutorial.md")
    assert OUTSIDE.search("--data /work/shared/data/ptb")
    assert OUTSIDE.search("cd /root/gradclip")
    assert not OUTSIDE.search("2 cores shared with other jobs; docs/references.md")
    assert not OUTSIDE.search("https://example.org/home/page and runs/work/x")


@pytest.mark.parametrize("path", user_facing_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_points_outside_the_repository(path):
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    bad = [f"{n}: {line.strip()}" for n, line in enumerate(lines, 1) if OUTSIDE.search(line)]
    assert not bad, f"{path.name} points outside the repository:\n" + "\n".join(bad)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    missing = []
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL (checked by no test: no network) or an anchor on the same page
        if not (doc.parent / target.split("#", 1)[0]).exists():
            missing.append(target)
    assert not missing, f"{doc.name} links to files that do not exist: {missing}"


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_license_file_matches_pyproject():
    declared = pyproject()["project"]["license"]  # PEP 639 string or the older table
    assert (declared if isinstance(declared, str) else declared["text"]) == "Apache-2.0"
    head = (ROOT / "LICENSE").read_text(encoding="utf-8")[:200].split()
    assert head[:5] == ["Apache", "License", "Version", "2.0,", "January"]


def test_changelog_has_the_current_version():
    version = pyproject()["project"]["version"]
    headings = re.findall(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text("utf-8"), re.M)
    assert headings[0] == "Unreleased"
    assert version in headings, f"CHANGELOG.md has no section for version {version}"


def test_every_public_package_has_an_api_page():
    documented = set()
    for page in (ROOT / "docs" / "api").glob("*.md"):
        documented |= set(re.findall(r"^::: ([\w.]+)", page.read_text("utf-8"), re.M))
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    package = ROOT / "src" / "gradclip"
    for sub in sorted(p.parent.name for p in package.glob("*/__init__.py")):
        if sub.startswith("_") or sub in NO_API_PAGE:
            continue
        assert f"gradclip.{sub}" in documented, (
            f"no API page for gradclip.{sub}: add docs/api/{sub}.md with "
            f"'::: gradclip.{sub}' and a line for it in mkdocs.yml's nav"
        )
    for page in sorted((ROOT / "docs" / "api").glob("*.md")):
        assert f"api/{page.name}" in nav, f"docs/api/{page.name} is not in mkdocs.yml's nav"


def test_every_docs_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    missing = [p for p in pages if not re.search(rf":\s*{re.escape(p)}\s*$", nav, re.M)]
    assert not missing, f"docs pages missing from mkdocs.yml's nav (add a line each): {missing}"
