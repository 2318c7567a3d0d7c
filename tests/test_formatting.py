"""The tree follows the one formatter config (pyproject.toml [tool.pyink], 2-space as flax)."""

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(shutil.which("pyink") is None, reason="pyink is not installed")
def test_tree_is_formatted():
  result = subprocess.run(
      [sys.executable, "-m", "pyink", "--check", "--quiet", "."],
      cwd=REPO,
      capture_output=True,
      text=True,
  )
  assert result.returncode == 0, "run `pyink .` to format:\n" + result.stderr
