"""The version is written once (dasr/__init__.py); the package metadata, the CLI and the changelog agree with it."""

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import dasr

ROOT = Path(__file__).parent.parent


def test_one_version_everywhere():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert importlib.metadata.version("dasr") == dasr.__version__
    done = subprocess.run([sys.executable, "-m", "dasr", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"dasr {dasr.__version__}"


def test_changelog_has_a_section_for_the_version():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    assert re.search(rf"^## \[{re.escape(dasr.__version__)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.MULTILINE)
