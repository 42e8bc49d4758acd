"""The runtime on aarch64 (Jetson, Raspberry Pi), emulated: artifacts compiled here on x86, loaded there
with the torch-free runtime and the registry's aarch64 wheels, give what they give on x86.

One model per task. For every variant and photo, two comparisons with x86, each judged by the parity
tolerances of the variant's precision (tasks.default_tolerance, as a compile judges a variant against
PyTorch): the engine on x86's own pre-processed tensor ("same feeds": the engine and the CPU's kernels
alone), and the whole device path from the image file ("own": decoding and pre-processing on aarch64
too). What each variant gave is written to aarch64-report.json in the test's folder and printed.
Emulated timings mean nothing, so nothing is timed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pytest
from PIL import Image

import edgevision
from edgevision.artifact import read_manifest
from edgevision.data import ShapesDataset
from edgevision.errors import BackendNotInstalled
from edgevision.recipe import parse_recipe
from edgevision.recipe_sections import Tolerance
from edgevision.runtime.images import to_rgb
from edgevision.tasks import default_tolerance
from edgevision.verify.parity import compare, judge

import aarch64
from conftest import Quiet

SAMPLES = Path(matplotlib.get_data_path()) / "sample_data"
# The backends with aarch64 wheels; TensorRT comes with JetPack on a Jetson, not from the registry.
ARM_BACKENDS = ("onnxruntime", "openvino", "ncnn")


@pytest.fixture(scope="module")
def arm() -> aarch64.Emulated:
    try:
        return aarch64.environment()
    except aarch64.Unavailable as e:
        pytest.skip(f"no aarch64 emulation on this host: {e}")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Two real photographs (JPEG and PNG, other sizes and aspect ratios than any network input) and one
    shapes scene, which the trained quickstart detector finds objects in."""
    folder = tmp_path_factory.mktemp("photos")
    scene = ShapesDataset(count=1, size=(240, 320), seed=5, max_objects=3)[0].image
    Image.fromarray(scene).save(folder / "shapes.png")
    shutil.copy(SAMPLES / "grace_hopper.jpg", folder)
    shutil.copy(SAMPLES / "Minduka_Present_Blue_Pack.png", folder)
    return [str(folder / name) for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "shapes.png")]


@pytest.fixture(scope="module")
def yolo_instances(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Instance segmentation and keypoints: Ultralytics' YOLO seg and pose at 128 (random weights, BatchNorm
    re-estimated). The R-CNNs are not emulated: a ResNet-50 FPN takes over a minute per image under qemu."""
    from edgevision import api
    from edgevision.random_weights import reestimated_checkpoint

    root, out = tmp_path_factory.mktemp("yolo-arm"), {}
    for task, config in (("instance_segmentation", "yolo11n-seg.yaml"), ("keypoints", "yolov8n-pose.yaml")):
        data = {"name": task, "model": {"source": f"ultralytics:{config}", "labels": ["circle", "square", "triangle"]},
                "input": {"size": 128}, "data": {"val": {"source": "shapes", "count": 6, "seed": 1}},
                "export": {"nms": {"score_threshold": 0.02}},  # random weights: low scores, fewer than max_detections
                "targets": [{"backend": "onnxruntime", "precision": "fp32"}, {"backend": "openvino", "precision": "fp32"}],
                "verify": {"images": 4, "timing_rounds": 0}, "output": str(root / task)}
        data["model"]["checkpoint"] = str(reestimated_checkpoint(parse_recipe(data).model_dump(mode="json"),
                                                                 root / f"{task}.pt"))
        api.compile(parse_recipe(data), reporter=Quiet(), threads=2)
        out[task] = root / task
    return out


@pytest.fixture(scope="module")
def artifacts(classifier_artifact, detector, unet_artifact, yolo_instances) -> dict[str, Path]:  # noqa: ANN001
    """One artifact per task: the session's own where there is one (the trained quickstart detector with all
    seven of its variants), and Ultralytics' small seg and pose models."""
    return {"classification": classifier_artifact[1], "segmentation": unet_artifact[1], "detection": detector,
            **yolo_instances}


def _x86_outputs(vdir: Path, photos: list[str], feeds_file: Path) -> list[dict[str, np.ndarray]]:
    """x86's engine outputs per photo; its pre-processed tensors go to feeds_file for the aarch64 run."""
    outputs, feeds_all = [], {}
    with edgevision.load(vdir, threads=2) as model:
        for i, photo in enumerate(photos):
            feeds, _ = model.feeds([to_rgb(photo)])
            feeds_all.update({f"{i}/{name}": value for name, value in feeds.items()})
            outputs.append({**model.runner.infer(feeds), "_feeds": feeds[model.input_name]})
    np.savez(feeds_file, **feeds_all)
    return outputs


def _split(arrays: Any, kind: str, count: int) -> list[dict[str, np.ndarray]]:
    return [{key.split("/", 1)[1]: arrays[key] for key in arrays.files if key.startswith(f"{kind}_{i}/")}
            for i in range(count)]


def _judge(task: str, precision: str, x86: list[dict], arm: list[dict]) -> dict[str, Any]:
    tolerance = Tolerance(**default_tolerance(task, precision))
    reference = [{k: v for k, v in x.items() if k != "_feeds"} for x in x86]
    metrics = compare(task, reference, arm, tolerance)
    return {"metrics": metrics, "failures": judge(metrics, tolerance)}


def test_every_variant_gives_on_aarch64_what_it_gives_on_x86(arm, artifacts, photos, tmp_path: Path) -> None:  # noqa: ANN001
    job: dict[str, Any] = {"photos": photos, "variants": [], "out": str(tmp_path)}
    x86: dict[str, tuple[str, str, list]] = {}
    for task, root in artifacts.items():
        for v in read_manifest(root).variants:
            if v.backend not in ARM_BACKENDS or v.status != "passed":
                continue
            name = f"{task}.{v.name}"
            try:
                outputs = _x86_outputs(root / v.name, photos, tmp_path / f"{name}.feeds.npz")
            except BackendNotInstalled:
                continue
            x86[name] = (task, v.precision, outputs)
            job["variants"].append({"name": name, "dir": str(root / v.name), "feeds": str(tmp_path / f"{name}.feeds.npz")})
    assert {t for t, _, _ in x86.values()} == set(artifacts), "a task has no variant to check on aarch64"
    (tmp_path / "job.json").write_text(json.dumps(job))
    done = arm.run([str(Path(__file__).with_name("aarch64_worker.py")), str(tmp_path / "job.json")],
                   pythonpath=[Path(__file__).resolve().parents[1]], timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]

    report, failures = {}, []
    for name, (task, precision, outputs) in x86.items():
        record = json.loads((tmp_path / f"{name}.json").read_text())
        assert record["machine"] == "aarch64" and not record["torch_loaded"]
        if record["status"] != "ran":
            failures.append(f"{name}: {record['status']}: {record['reason']}")
            continue
        arrays = np.load(tmp_path / f"{name}.npz")
        feeds_diff = max(float(np.abs(arrays[f"feeds_{i}"].astype(np.float64) - o["_feeds"]).max())
                         for i, o in enumerate(outputs))
        entry = {"precision": precision, "max_feed_diff": feeds_diff,
                 "same_feeds": _judge(task, precision, outputs, _split(arrays, "same", len(photos))),
                 "own_preprocessing": _judge(task, precision, outputs, _split(arrays, "own", len(photos)))}
        report[name] = entry
        failures += [f"{name} ({kind}): {reason}" for kind in ("same_feeds", "own_preprocessing")
                     for reason in entry[kind]["failures"]]
    (tmp_path / "aarch64-report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    assert not failures, "\n".join(failures)
    assert len(report) == 19  # every ONNX Runtime, OpenVINO and ncnn variant of the five artifacts ran there
