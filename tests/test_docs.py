"""The documentation holds: the MkDocs site (mkdocs.yml, docs/) builds under --strict, so a broken link, a missing
page or a page outside the nav fails here; and the README still fits on a screen."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 200  # what it is, the two commands, the demo's output, data, families, phases, cluster, links


def test_the_site_builds_strictly(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
    assert (tmp_path / "site" / "index.html").exists()


def test_the_readme_fits_in_200_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"
