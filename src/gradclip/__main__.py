"""``python -m gradclip`` runs the command-line interface."""

import sys

from gradclip.cli import main

sys.exit(main())
