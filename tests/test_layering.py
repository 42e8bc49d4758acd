"""The layering contracts in pyproject.toml ([tool.importlinter]) hold, counting imports inside
functions: the runtime side never imports compile-time code, onnx or torch; tasks and errors sit at
the bottom; console, verify, export and the report writers never reach the compile flow (api);
export needs no runtime predictor and the report writers no console."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    proc = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout and proc.stdout.count("KEPT") >= 4
