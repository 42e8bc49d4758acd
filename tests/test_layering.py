"""The layering contracts in pyproject.toml ([tool.importlinter]) hold, counting imports inside
functions: the runtime side (runners included) never imports compile-time code (builders, export,
quantize, ...), onnx or torch; tasks, errors, reporting and version sit at the bottom; console,
verify, export, builders and the benchmark never reach the compile flow (api); export needs no
runtime predictor and the report writers no console; and no two of edgevision's modules or
packages import each other, directly or through others."""

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
    assert "0 broken" in proc.stdout and proc.stdout.count("KEPT") >= 5
