"""The HTML report in a real browser: headless Chromium loads it from a file:// URL.

Checks, from the DOM after the load event, that every figure decoded with a non-zero
natural size and that the page logged nothing to the console; keeps a screenshot.
Skips when no Chromium is installed (``apt-get install chromium``).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gradclip.diagnostics.report import write_report

pytestmark = pytest.mark.usefixtures("one_thread")

CHROMIUM = next(
    (
        p
        for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
        if p and Path(p).exists()
    ),
    None,
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=10000",
]
PROBE = """<script>
window.addEventListener("load", function () {
  var out = [];
  for (var i = 0; i < document.images.length; i++) {
    var im = document.images[i];
    out.push([im.complete, im.naturalWidth, im.naturalHeight]);
  }
  document.body.setAttribute("data-imgs", JSON.stringify(out));
});
</script>
"""


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    cmd = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp / "cache"), "XDG_CONFIG_HOME": str(profile)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, env=env)


def load(tmp: Path, page: Path) -> tuple[list[list[object]], list[str]]:
    """The probe's image facts and the console lines, for a test copy of ``page``."""
    probe = tmp / f"probe-{page.name}"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"))
    res = chromium(tmp, "--enable-logging=stderr", "--v=0", "--dump-dom", probe.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    found = re.search(r'data-imgs="([^"]*)"', res.stdout)
    assert found, "the load event never ran (no data-imgs in the dumped DOM)"
    console = [line for line in res.stderr.splitlines() if ":CONSOLE" in line]
    return json.loads(html.unescape(found.group(1))), console


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_in_chromium(tmp_path: Path) -> None:
    import torch

    from gradclip.diagnostics.profile import temporal_profile, write_profile
    from gradclip.diagnostics.tasks import TaskConfig, train_task
    from gradclip.diagnostics.tasks.grid import write_results

    rnn = torch.nn.RNN(3, 6)
    write_profile(tmp_path / "prof", temporal_profile(rnn, torch.randn(15, 2, 3)), "nn.RNN")
    runs = [train_task(TaskConfig("add", 10, s, steps=5, eval_size=20)) for s in (0, 1)]
    write_results(tmp_path / "tasks", runs, {"steps": 5})
    page = write_report([tmp_path / "prof", tmp_path / "tasks"], tmp_path / "report.html")

    images, console = load(tmp_path, page)
    assert len(images) == 2
    for complete, width, height in images:
        assert complete and int(width) > 0 and int(height) > 0  # type: ignore[call-overload]
    assert console == [], console

    shot = tmp_path / "report.png"
    res = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri())
    assert res.returncode == 0 and shot.read_bytes().startswith(b"\x89PNG")
    print(f"screenshot: {shot}")

    # the checks can fail: a broken image and a console error are both seen
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<html><body><img src="data:image/png;base64,AAAA">'
        '<script>console.error("boom")</script></body></html>'
    )
    images, console = load(tmp_path, bad)
    assert images[0][1] == 0 and any("boom" in line for line in console)
