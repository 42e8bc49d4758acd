"""Integration: compile small models to ONNX Runtime and OpenVINO and check parity and the artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

import edgevision
from edgevision.artifact import read_manifest, verify_files
from edgevision.data import ShapesDataset
from edgevision.errors import ArtifactError, VerificationFailed

from conftest import Quiet, calibrated_checkpoint, openvino_runs_bf16, recipe_dict


def _check_passed(manifest: dict, names: list[str]) -> None:
    assert [v["name"] for v in manifest["variants"]] == names
    for v in manifest["variants"]:
        assert v["status"] == "passed", (v["name"], v.get("reasons"))


def test_unet_segmentation_artifact(unet_artifact) -> None:  # noqa: ANN001
    manifest, root = unet_artifact
    _check_passed(manifest, ["onnxruntime-fp32", "openvino-fp32", "openvino-bf16", "ncnn-fp32"])
    fp32 = {v["name"]: v for v in manifest["variants"]}
    for name in ("onnxruntime-fp32", "openvino-fp32"):
        p = fp32[name]["parity"]
        assert p["max_abs_diff"] < 1e-3 and p["min_cosine"] > 0.99999 and p["pixel_agreement"] > 0.999
        assert p["labels_agreement"] > 0.999
    assert fp32["openvino-bf16"]["execution_precision"] == ("bf16" if openvino_runs_bf16() else "f32")
    assert fp32["openvino-fp32"]["execution_precision"] == "f32"
    # the artifact is self-describing and every file is checksummed
    verify_files(root, manifest["files"])
    assert {"model.onnx", "openvino-fp32/model.xml", "openvino-fp32/model.bin", "onnxruntime-fp32/variant.json"} <= set(manifest["files"])
    model = onnx.load(str(root / "model.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["edgevision.task"] == "segmentation" and json.loads(meta["edgevision.labels"])[0] == "background"
    assert model.ir_version <= 13 and [o.name for o in model.graph.output] == ["logits", "labels"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    assert manifest["baseline"]["accuracy"]["images"] == 6
    assert manifest["recipe"]["sha256"] and manifest["tools"]["onnxruntime"]


def test_artifact_is_current_for_the_recipe_as_written(unet_artifact) -> None:  # noqa: ANN001
    """`edgevision benchmark recipe.yaml` reuses the artifact compiled from that recipe: the manifest
    holds the recipe as compiled (num_classes filled in from the labels), the user's has none."""
    from edgevision.api import is_current
    from edgevision.recipe import parse_recipe

    _, root = unet_artifact
    content = read_manifest(root).recipe["content"]
    assert content["model"]["num_classes"] == 4
    as_written = {**content, "model": {**content["model"], "num_classes": None}}
    assert is_current(parse_recipe(as_written))
    assert not is_current(parse_recipe({**as_written, "verify": {**content["verify"], "images": 3}}))


def test_fp32_backends_agree_through_the_runtime(unet_artifact) -> None:  # noqa: ANN001
    _, root = unet_artifact
    images = [ShapesDataset(3, seed=11, size=(50, 90))[i].image for i in range(3)]  # not the network size
    maps = []
    for name in ("onnxruntime-fp32", "openvino-fp32"):
        with edgevision.load(root / name) as model:
            results = model.predict(images)
            assert [r.label_map.shape for r in results] == [(50, 90)] * 3
            maps.append(np.stack([r.label_map for r in results]))
    assert (maps[0] == maps[1]).mean() > 0.999


def test_load_by_artifact_folder_and_errors(unet_artifact, tmp_path: Path) -> None:  # noqa: ANN001
    _, root = unet_artifact
    with edgevision.load(root) as model:
        assert model.name == "onnxruntime-fp32"  # first verified variant
    with pytest.raises(ArtifactError, match="no variant 'tensorrt-fp16'"):
        edgevision.load(root, "tensorrt-fp16")
    with pytest.raises(ArtifactError, match="artifact directory not found"):
        edgevision.load(tmp_path / "nothing")


def test_modified_file_is_named(unet_artifact, tmp_path: Path) -> None:  # noqa: ANN001
    import shutil

    _, root = unet_artifact
    copy = tmp_path / "copy"
    shutil.copytree(root / "openvino-fp32", copy)
    with open(copy / "model.bin", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(ArtifactError, match=r"modified file model.bin \(sha256 mismatch\)"):
        edgevision.load(copy)


@pytest.mark.parametrize(
    "name,task,source,size,extra",
    [
        ("mnv3", "classification", "mobilenet_v3_small", 64, {}),
        ("lraspp", "segmentation", "lraspp_mobilenet_v3_large", 96, {}),
        # max-unpooling flips placements on near-tied activations (see models/segnet.py)
        ("segnet", "segmentation", "segnet", 64, {"model": {"kwargs": {"width": 4}}, "verify": {
            "tolerances": {"fp32": {"min_cosine": 0.999, "max_abs_diff": None, "min_agreement": 0.995}}}}),
        ("resnet_nhwc", "classification", "resnet18", 64,
         {"input": {"layout": "nhwc", "resize": "letterbox", "channel_order": "bgr"}, "export": {"exporter": "torchscript"}}),
    ],
)
def test_models_compile_with_parity(compiled, name, task, source, size, extra) -> None:  # noqa: ANN001
    manifest, root = compiled(name, task, source, size, **extra)
    _check_passed(manifest, ["onnxruntime-fp32", "openvino-fp32"])
    for v in manifest["variants"]:
        assert v["parity"]["max_abs_diff"] < (1e-3 if name != "segnet" or v["backend"] == "onnxruntime" else 1.0)
    with edgevision.load(root / "openvino-fp32") as model:
        r = model.predict(ShapesDataset(1, seed=2, size=(70, 40))[0].image)
        if task == "classification":
            assert len(r) == 3 and abs(float(r.scores.sum()) - 1) < 1e-5 and r.names[0] in ("circle", "square", "triangle")
        else:
            assert r.label_map.shape == (70, 40)


def test_verify_data_names_the_images_parity_ran_on(compiled, build_root: Path) -> None:  # noqa: ANN001
    """Issue 15, item 6: parity runs on the user's kind of images when asked, and says which it used."""
    frames = build_root / "verify-frames"
    frames.mkdir(exist_ok=True)
    for i in range(3):
        Image.fromarray(ShapesDataset(1, seed=40 + i, size=(90, 120))[0].image).save(frames / f"f{i}.png")
    manifest, _ = compiled("mnv3_frames", "classification", "mobilenet_v3_small", 64,
                           verify={"images": 5, "timing_rounds": 1, "data": {"source": "folder", "path": str(frames)}},
                           targets=[{"backend": "onnxruntime", "precision": "fp32"}])
    assert manifest["verified_on"] == f"3 images from verify.data (folder {frames})"
    assert manifest["variants"][0]["parity"]["images"] == 3 and manifest["variants"][0]["status"] == "passed"
    default, _ = compiled("mnv3", "classification", "mobilenet_v3_small", 64)
    assert default["verified_on"] == "4 images from data.val (shapes)"


def test_tolerance_failure_keeps_previous_artifact(unet_artifact, build_root: Path) -> None:  # noqa: ANN001
    from edgevision import api
    from edgevision.recipe import parse_recipe

    data = recipe_dict("strict", "segmentation", "unet", 64, build_root, model={"kwargs": {"width": 4, "depth": 3}})
    data["model"]["checkpoint"] = str(calibrated_checkpoint(data, build_root / "strict.pt"))
    data["targets"] = [{"backend": "openvino", "precision": "bf16"}]
    api.compile(parse_recipe(data), reporter=Quiet())  # default bf16 tolerance passes
    before = read_manifest(build_root / "strict").created, (build_root / "strict" / "manifest.json").read_bytes()
    data["verify"]["tolerances"] = {"bf16": {"min_cosine": 1.0, "max_abs_diff": 1e-9, "min_agreement": 1.0}}
    with pytest.raises(VerificationFailed) as e:
        api.compile(parse_recipe(data), reporter=Quiet())
    assert "openvino-bf16" in str(e.value) and "strict.failed" in str(e.value)
    failed = read_manifest(build_root / "strict.failed")
    assert failed.variants[0].status == "failed" and failed.variants[0].reasons
    assert (build_root / "strict" / "manifest.json").read_bytes() == before[1]
    data["verify"]["tolerances"] = {}
    api.compile(parse_recipe(data), reporter=Quiet())  # passing again clears the stale failure
    assert not (build_root / "strict.failed").exists() and read_manifest(build_root / "strict").created


def test_export_failure_names_the_module(build_root: Path) -> None:
    from edgevision import api
    from edgevision.errors import ExportError
    from edgevision.recipe import parse_recipe

    data = recipe_dict("segnet_ts", "segmentation", "segnet", 64, build_root, export={"exporter": "torchscript"})
    with pytest.raises(ExportError, match=r"failed in module MaxUnpool2d .*Try export.exporter: dynamo"):
        api.compile(parse_recipe(data), reporter=Quiet())
    assert not (build_root / "segnet_ts").exists() and not list(build_root.glob(".segnet_ts*"))
