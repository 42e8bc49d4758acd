"""The README's main command, run as a user would, in a fresh working directory."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import readme_command


@pytest.mark.slow
def test_readme_quickstart(quickstart, tmp_path) -> None:  # noqa: ANN001
    workdir, first = quickstart
    assert first.returncode == 0, first.stderr[-3000:]
    assert "training it first" in first.stderr
    manifest = json.loads((workdir / "build" / "quickstart" / "manifest.json").read_text())
    assert manifest["task"] == "detection"
    base = manifest["baseline"]["accuracy"]["map"]
    assert base > 0.5, f"the trained quickstart detector only reaches mAP {base:.3f}"
    for v in manifest["variants"]:
        assert v["status"] == "passed"
        assert abs(v["accuracy"]["map"] - base) < 0.02, (v["name"], v["accuracy"]["map"], base)
        if v["precision"] == "fp32":  # the end-to-end criteria
            assert v["parity"]["matched"] >= 0.99 and abs(v["accuracy"]["map"] - base) < 0.001
        if v["precision"] == "int8":  # calibrated on 300 images, gated at 1 point of mAP
            assert v["accuracy_drop"] <= 1.0 and v["settings"]["quantization"]["calibration"]["images"] == 300
    assert re.search(r"openvino-bf16\s.*passed", first.stdout)

    # The rerun, in a copy of that working directory: the session's build/quickstart is shared with other tests.
    workdir = Path(shutil.copytree(workdir, tmp_path / "again", symlinks=True))
    second = subprocess.run(readme_command(), cwd=workdir, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "using checkpoint" in second.stderr and "training" not in second.stderr
    again = json.loads((workdir / "build" / "quickstart" / "manifest.json").read_text())
    ort_int8 = next(v for v in again["variants"] if v["name"] == "onnxruntime-int8")
    assert ort_int8["settings"]["quantization"]["calibration_cached"]  # the rebuild did not recalibrate
