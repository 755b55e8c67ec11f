import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEDIA = os.path.join(ROOT, "..", "shared", "media")


@pytest.fixture
def media():
    """The shared real media folder; tests using it skip when it is absent (users' clones)."""
    if not os.path.isdir(MEDIA):
        pytest.skip("../shared/media is not present")
    return MEDIA


def run_script(*args, cwd=None):
    """Run a top-level script (e.g. 'data.py') with the same Python; returns CompletedProcess."""
    script = os.path.join(ROOT, args[0])
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, script, *args[1:]], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
