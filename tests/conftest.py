"""Test configuration: deterministic hypothesis examples in CI, random ones elsewhere."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
