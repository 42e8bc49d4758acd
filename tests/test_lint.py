"""The code passes ruff's Pyflakes and syntax checks ([tool.ruff] in pyproject.toml): no unused imports or
variables, no undefined names, no f-string without a placeholder, in the package, the tests and the benchmarks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing() -> None:
    exe = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    proc = subprocess.run([exe, "check", "--no-cache", "edgevision", "tests", "benchmarks"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


def test_ruff_would_see_an_unused_import(tmp_path: Path) -> None:
    """The check is live: the same configuration flags a planted unused import."""
    planted = tmp_path / "planted.py"
    planted.write_text("import os\n")
    exe = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    proc = subprocess.run([exe, "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(planted)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "F401" in proc.stdout, proc.stdout + proc.stderr
