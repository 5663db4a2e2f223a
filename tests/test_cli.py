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


def test_demo_runs_and_clipping_beats_no_clipping(capsys):
    assert main(["demo", "--steps", "150"]) == 0
    out = capsys.readouterr().out
    assert "The cliff" in out and "half to ten times" in out


def test_cliff_clipped_descent_reaches_a_lower_loss():
    from gradclip.diagnostics.demo import descend_cliff

    plain = descend_cliff(6.0, -3.0, 0.5, 300, None)
    clipped = descend_cliff(6.0, -3.0, 0.5, 300, 1.0)
    assert clipped.losses[-1] < 1e-3 < plain.losses[-1]
    assert max(plain.norms) > 1.0  # the unclipped run did meet the wall


def test_temporal_profile_vanishes_below_gain_one():
    from gradclip.diagnostics.demo import temporal_profile

    vanish = temporal_profile(0.9, 16, 40, seed=0)
    explode = temporal_profile(1.3, 16, 40, seed=0)
    assert vanish[-1] < 0.01 * vanish[0]
    assert explode[-1] > explode[0]


def test_demo_bad_arguments_exit_2(capsys):
    assert main(["demo", "--steps", "0"]) == 2
    assert main(["demo", "--clip-norm", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("gradclip demo: error:") for line in err)
