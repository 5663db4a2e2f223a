import subprocess
import sys

import gradclip
from gradclip.cli import main


def test_version_flag(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out.strip() == f"gradclip {gradclip.__version__}"


def test_python_dash_m_help():
    out = subprocess.run(
        [sys.executable, "-m", "gradclip", "--help"], capture_output=True, text=True, check=True
    )
    assert "usage: gradclip" in out.stdout


# The demo's tests live in test_demo.py; its cliff and profile checks in test_cliff.py
# and test_profile.py.
