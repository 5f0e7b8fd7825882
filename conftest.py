"""Lets ``pytest probes/ --celery-app proj`` work from a checkout, installed or not."""

import sys
from pathlib import Path

try:
    import celery_probe  # noqa: F401
except ImportError:  # a bare checkout: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

# Registered under the same name as the pytest11 entry point, so an installed copy is not
# registered twice.
pytest_plugins = ["celery_probe.pytest_plugin.plugin"]
