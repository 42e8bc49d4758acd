"""The artifact's typed records (records.py) and how artifact.py reads them: JSON round trips,
records that are never changed in place, and clear errors for manifests of another schema or
shape."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from edgevision.artifact import read_manifest
from edgevision.errors import ArtifactError
from edgevision.records import SCHEMA_VERSION, InputSpec, Manifest, ModelInfo, VariantRecord

INFO = ModelInfo(task="detection", labels=("circle", "square"), input=InputSpec((96, 128), resize="letterbox"),
                 outputs=("num_dets", "boxes", "scores", "labels"), max_batch=64, nms={"iou_threshold": 0.5})
PASSED = VariantRecord("onnxruntime-fp32", "onnxruntime", "fp32", settings={"files": {"model": "model.onnx"}},
                       status="passed", parity={"matched": 1.0}, files={"model.onnx": {"sha256": "ab", "bytes": 3}},
                       latency={"e2e": {"p50": 1.5}})
BROKEN = VariantRecord("openvino-int8", "openvino", "int8", status="error", reasons=("no calibration images",))


def _manifest() -> Manifest:
    return Manifest(name="demo", info=INFO, variants=(PASSED, BROKEN), created="2026-12-02T08:00:00+0000",
                    recipe={"sha256": "cd", "content": {}}, baseline={"accuracy": None}, verified_on="4 images",
                    files={"model.onnx": {"sha256": "ef", "bytes": 9}})


def test_records_round_trip_through_json() -> None:
    manifest = _manifest()
    data = json.loads(json.dumps(manifest.to_json()))
    assert data["schema_version"] == SCHEMA_VERSION and data["input"]["max_batch"] == 64
    assert data["input"]["name"] == "images" and data["input"]["resize"] == "letterbox" and "proposals" not in data["input"]
    assert "latency" not in data["variants"][1] and data["variants"][1]["reasons"] == ["no calibration images"]
    assert Manifest.from_json(data) == manifest
    public = PASSED.to_json(VariantRecord.PUBLIC)
    assert "latency" not in public and "options" not in public and public["parity"] == {"matched": 1.0}


def test_records_are_replaced_not_changed() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        PASSED.status = "failed"  # type: ignore[misc]
    failed = dataclasses.replace(PASSED, status="failed", reasons=PASSED.reasons + ("accuracy gate",))
    assert PASSED.status == "passed" and PASSED.reasons == () and failed.reasons == ("accuracy gate",)


def _write(root: Path, data: dict) -> Path:
    root.mkdir(exist_ok=True)
    (root / "manifest.json").write_text(json.dumps(data))
    return root


def test_manifests_of_another_schema_or_shape_are_clear_errors(tmp_path: Path) -> None:
    good = json.loads(json.dumps(_manifest().to_json()))
    assert read_manifest(_write(tmp_path / "good", good)) == _manifest()
    cases = [
        ({**good, "schema_version": 2}, "schema_version 2 is not supported (expected 1); rebuild it"),
        ({k: v for k, v in good.items() if k != "schema_version"}, "schema_version None is not supported"),
        ({**good, "variants": {"onnxruntime-fp32": {}}}, "'variants' must be a list"),
        ({**good, "variants": [{"name": "x"}]}, "'backend' must be a str"),
        ({**good, "task": "painting"}, "task 'painting' is not one of"),
        ({**good, "input": {**good["input"], "size": [96]}}, "'input' needs size"),
    ]
    for i, (data, message) in enumerate(cases):
        with pytest.raises(ArtifactError) as e:
            read_manifest(_write(tmp_path / str(i), data))
        assert message in str(e.value) and "manifest.json" in str(e.value) and "rebuild" in str(e.value)
