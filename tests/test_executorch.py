"""ExecuTorch targets (phones): programs lowered with the XNNPACK delegate from the same PyTorch graph, verified
against PyTorch by the compile itself, and run through the same Predictor as every other backend."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest

import edgevision
from edgevision.errors import RecipeError
from edgevision.recipe import parse_recipe

from conftest import Quiet, built_once, calibrated_checkpoint, recipe_dict

SAMPLES = Path(matplotlib.get_data_path()) / "sample_data"
FP32 = {"backend": "executorch", "precision": "fp32"}
ORT = {"backend": "onnxruntime", "precision": "fp32"}


def _detector(build_root: Path) -> tuple[dict, Path]:
    """The YOLO-style detector (random weights, BatchNorm re-estimated) with ExecuTorch FP32 and INT8: the INT8
    program may fail its parity on random weights (the compile then writes <name>.failed), which is a result."""
    from edgevision import api
    from edgevision.errors import VerificationFailed

    with built_once(build_root, "yolo_executorch") as out:
        failed = out.with_name(out.name + ".failed")
        if not (out / "manifest.json").exists() and not (failed / "manifest.json").exists():
            data = recipe_dict("yolo_executorch", "detection", "yolo", 160, build_root, model={"kwargs": {"size": "n"}},
                               export={"nms": {"score_threshold": 0.05}}, calibration={"source": "shapes", "count": 16},
                               targets=[ORT, FP32, {"backend": "executorch", "precision": "int8"}])
            data["model"]["checkpoint"] = str(calibrated_checkpoint(data, build_root / "yolo_executorch.pt"))
            try:
                api.compile(parse_recipe(data), reporter=Quiet(), threads=2)
            except VerificationFailed:
                pass
        folder = out if (out / "manifest.json").exists() else failed
        return json.loads((folder / "manifest.json").read_text()), folder


@pytest.fixture(scope="module")
def executorch_artifacts(compiled, build_root: Path) -> dict:  # noqa: ANN001
    return {
        "classification": compiled("mnv3_executorch", "classification", "mobilenet_v3_small", 64, targets=[ORT, FP32]),
        "segmentation": compiled("unet_executorch", "segmentation", "unet", 64, model={"kwargs": {"width": 4, "depth": 3}},
                                 export={"argmax": True}, targets=[ORT, FP32]),
        "detection": _detector(build_root),
    }


def test_fp32_programs_match_pytorch_for_each_task(executorch_artifacts) -> None:  # noqa: ANN001
    for task, (manifest, _) in executorch_artifacts.items():
        v = next(v for v in manifest["variants"] if v["name"] == "executorch-fp32")
        assert v["status"] == "passed", (task, v["reasons"])
        assert v["settings"]["delegated"]["xnnpack_partitions"] >= 1  # XNNPACK runs it, not the portable kernels
        parity = v["parity"]
        if task == "detection":
            assert parity["matched"] == 1.0 and parity["max_score_diff"] < 1e-4 and parity["detections"] > 0
            assert v["settings"]["host_postprocessing"] == "nms"  # the program ends before the NMS
        elif task == "segmentation":
            assert parity["pixel_agreement"] > 0.999 and parity["labels_agreement"] > 0.999
        else:
            assert parity["min_cosine"] > 0.99999 and parity["top1_agreement"] == 1.0


def test_int8_program_is_quantized_and_judged(executorch_artifacts) -> None:  # noqa: ANN001
    manifest, folder = executorch_artifacts["detection"]
    int8 = next(v for v in manifest["variants"] if v["name"] == "executorch-int8")
    assert int8["status"] in ("passed", "failed") and int8["parity"]["detections"] > 0  # built, run and compared
    sizes = {name: (folder / name / "model.pte").stat().st_size for name in ("executorch-fp32", "executorch-int8")}
    assert sizes["executorch-int8"] < 0.45 * sizes["executorch-fp32"]  # int8 weights


def test_predictor_on_a_photo_gives_what_onnxruntime_gives(executorch_artifacts) -> None:  # noqa: ANN001
    photo = str(SAMPLES / "grace_hopper.jpg")
    for task, (_, folder) in executorch_artifacts.items():
        with edgevision.load(folder, "executorch-fp32") as et, edgevision.load(folder, "onnxruntime-fp32") as ort:
            a, b = et.predict([photo, photo]), ort.predict([photo, photo])  # a batch: run image by image
            for x, y in zip(a, b):
                if task == "detection":
                    assert len(x) == len(y) > 0 and np.array_equal(x.class_ids, y.class_ids)
                    np.testing.assert_allclose(x.boxes, y.boxes, atol=0.05)
                elif task == "segmentation":
                    assert (x.label_map == y.label_map).mean() > 0.999 and len(np.unique(y.label_map)) >= 2
                else:
                    assert list(x.class_ids) == list(y.class_ids)
                    np.testing.assert_allclose(x.scores, y.scores, atol=1e-5)


@pytest.mark.parametrize("task", ["instance_segmentation", "keypoints", "oriented_detection"])
def test_tasks_with_the_nms_inside_are_refused_at_recipe_load(task: str, tmp_path: Path) -> None:
    data = recipe_dict("x", task, "maskrcnn_resnet50_fpn", 64, tmp_path, targets=[FP32])
    with pytest.raises(RecipeError, match=r"executorch.*(NMS|nms)"):
        parse_recipe(data)
