"""Ultralytics YOLO (detect, segment, pose) and timm models as recipe sources, against their own
libraries: edgevision's artifacts on ONNX Runtime and OpenVINO vs Ultralytics' own prediction
(its non_max_suppression and process_mask) and vs timm eager, on the same network input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pytest
import torch

import edgevision
from edgevision import api
from edgevision.errors import ExportError, ModelSourceError, RecipeError
from edgevision.models import external
from edgevision.random_weights import reestimated_checkpoint
from edgevision.models.sources import build_model
from edgevision.ops.nms import box_iou
from edgevision.recipe import parse_recipe
from edgevision.runtime.images import read_image
from edgevision.runtime.instances import ProtoMasks
from conftest import Quiet
from oracles import ultralytics_reference

external._import("ultralytics", "ultralytics")  # as a compile does: Ultralytics' patch of PIL undone
PHOTO = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
LABELS = ["circle", "square", "triangle"]
# kind -> (task, model YAML, export.end2end). YOLOv10 and YOLO26 heads have a one-to-many and a one-to-one
# branch: v10 and 26-pose are exported with the one-to-one branch (top-k, no NMS), 26-seg with the branch
# Ultralytics' predictor runs by default (one-to-many + NMS), with YOLO26's Proto26 and Pose26's decoding.
TASKS = {"detect": ("detection", "yolov8n.yaml", None), "seg": ("instance_segmentation", "yolo11n-seg.yaml", None),
         "pose": ("keypoints", "yolov8n-pose.yaml", None), "v10-e2e": ("detection", "yolov10n.yaml", True),
         "26seg": ("instance_segmentation", "yolo26n-seg.yaml", None), "26pose-e2e": ("keypoints", "yolo26n-pose.yaml", True)}

NCNN = ("detect",)  # the one-to-many detection head: what ncnn carries (its graph ends before the NMS)


def yolo_recipe(name: str, config: str, out: Path, **extra: Any) -> dict[str, Any]:
    return {"name": name, "model": {"source": f"ultralytics:{config}", "labels": LABELS},
            "input": {"size": 320}, "export": {"dynamic_batch": True},
            "data": {"val": {"source": "shapes", "count": 6, "seed": 1}},
            "targets": [{"backend": "onnxruntime", "precision": "fp32"}, {"backend": "openvino", "precision": "fp32"}],
            "verify": {"images": 4, "timing_rounds": 0}, "output": str(out / name), **extra}


@pytest.fixture(scope="module")
def yolo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, Path]]:
    """kind -> (the Ultralytics model, artifact dir): random weights, BatchNorm re-estimated, the
    class head spread so that scores are not all ties (random_weights.spread_class_logits)."""
    root, out = tmp_path_factory.mktemp("yolo"), {}
    for kind, (task, config, end2end) in TASKS.items():
        data = yolo_recipe(f"yolo-{kind}", config, root)
        if end2end is not None:
            data["export"]["end2end"] = end2end
        if end2end:  # the TensorRT-bound graph too (verified by CPU emulation where TensorRT is absent)
            data["targets"].append({"backend": "tensorrt", "precision": "fp32"})
        if kind in NCNN:  # best class per box and the NMS on the host; DFL's one-axis sum rewritten for pnnx
            data["targets"].append({"backend": "ncnn", "precision": "fp32"})
        data["model"]["checkpoint"] = str(reestimated_checkpoint(parse_recipe(data).model_dump(mode="json"),
                                                                 root / f"{kind}.pt"))
        recipe = parse_recipe(data)
        assert recipe.task == task  # taken from the model YAML
        manifest = api.compile(recipe, reporter=Quiet(), threads=2)
        branch = manifest["export"]["head"]  # named in the manifest, never chosen silently
        assert branch == ("one-to-one (NMS-free top-k)" if end2end else "one-to-many (NMS)"), (kind, branch)
        out[kind] = (build_model(recipe.model), root / data["name"])
    return out


def _inputs(predictor: Any) -> tuple[dict[str, np.ndarray], list[Any]]:
    from edgevision.data.shapes import ShapesDataset

    shapes = [ShapesDataset(2, seed=3, size=(320, 320))[i].image for i in range(2)]
    return predictor.feeds([read_image(PHOTO), *shapes])


@pytest.mark.parametrize(("kind", "variant"), [(k, v) for v in ("onnxruntime-fp32", "openvino-fp32") for k in TASKS]
                         + [(k, "ncnn-fp32") for k in NCNN])
def test_matches_ultralytics_own_prediction(yolo: dict[str, tuple[Any, Path]], kind: str, variant: str) -> None:
    model, artifact = yolo[kind]
    predictor = edgevision.load(artifact, variant)
    feeds, _ = _inputs(predictor)
    ours = predictor.runner.infer(feeds)
    task, _, end2end = TASKS[kind]
    # YOLO26 / v10 (random weights): their class heads' spread (spread_class_logits) scales float noise to 2e-4
    # and ncnn's fp32 kernels (Winograd convolutions, its own exp) stray further than ONNX Runtime's: 1.2e-4 seen
    score_tolerance = 1e-4 if kind in ("detect", "seg", "pose") and not variant.startswith("ncnn") else 5e-4
    theirs = ultralytics_reference(model, torch.from_numpy(feeds[predictor.input_name]), end2end=bool(end2end))
    total = matched = 0
    for i, ref in enumerate(theirs):
        n = int(ours["num_dets"][i, 0])
        boxes, scores, labels = ours["boxes"][i, :n], ours["scores"][i, :n], ours["labels"][i, :n]
        total += len(ref["boxes"])
        assert n == len(ref["boxes"])
        if not n:
            continue
        iou = box_iou(ref["boxes"], boxes) * (ref["labels"][:, None] == labels[None])
        # the closest score among same-class boxes at IoU > 0.99 (the one-to-one head keeps near-duplicates)
        gap = np.where(iou > 0.99, np.abs(ref["scores"][:, None] - scores[None]), np.inf)
        pair = gap.argmin(axis=1)
        ok = np.isfinite(gap[np.arange(len(pair)), pair])
        matched += int(ok.sum())
        assert np.abs(ref["scores"][ok] - scores[pair[ok]]).max() <= score_tolerance
        if task == "keypoints":
            dist = np.linalg.norm(ref["keypoints"][ok][..., :2] - ours["keypoints"][i, pair[ok]][..., :2], axis=-1)
            assert dist.max() <= 0.5
            assert np.abs(ref["keypoints"][ok][..., 2] - ours["keypoints"][i, pair[ok]][..., 2]).max() <= 1e-3
        if task == "instance_segmentation":
            masks = ProtoMasks(ours["mask_coefficients"][i, pair[ok]], ours["protos"][i], boxes[pair[ok]],
                               predictor.input.size, None).network()  # type: ignore[arg-type]
            inter, union = (masks & ref["masks"][ok]).sum(axis=(1, 2)), (masks | ref["masks"][ok]).sum(axis=(1, 2))
            drawn = union > 0  # YOLO26's random boxes can be degenerate: empty crops, empty on both sides
            assert drawn.all() if kind == "seg" else drawn.mean() >= 0.5
            # YOLO26's Proto26 logits sit nearer 0: pixels within float noise of it flip (one mask at IoU 0.966 seen)
            assert (inter[drawn] / union[drawn]).min() >= (0.98 if kind == "seg" else 0.95)
            assert inter.sum() >= 0.99 * union.sum()
    assert total >= 10 and len({int(v) for r in theirs for v in r["labels"]}) >= 2  # a comparison with something in it
    assert matched / total >= 0.99


def test_the_one_to_one_graph_has_no_nms_and_passes_on_every_backend(yolo: dict[str, tuple[Any, Path]]) -> None:
    from edgevision.artifact import read_manifest

    for kind in ("v10-e2e", "26pose-e2e"):
        manifest = read_manifest(yolo[kind][1])
        ops = manifest.export["ops"]
        assert ops.get("TopK", 0) >= 2 and "NonMaxSuppression" not in ops, ops  # the head's two-stage top-k
        assert {v.name: v.status for v in manifest.variants} == {"onnxruntime-fp32": "passed", "openvino-fp32": "passed",
                                                                  "tensorrt-fp32": "passed"}
        assert all(v.parity["detections"] >= 10 and v.parity["matched"] >= 0.99 for v in manifest.variants)


def test_predict_gives_original_pixels_masks_and_keypoints(yolo: dict[str, tuple[Any, Path]]) -> None:
    photo = read_image(PHOTO)
    for kind in ("seg", "pose"):
        dets = edgevision.load(yolo[kind][1], "onnxruntime-fp32").predict(photo)
        assert len(dets) > 0
        if kind == "seg":
            assert dets.masks.shape == (len(dets), *photo.shape[:2]) and dets.masks.any(axis=(1, 2)).all()
            x0, y0, x1, y1 = dets.boxes[0]
            ys, xs = np.nonzero(dets.masks[0])
            assert xs.min() >= x0 - 2 and xs.max() <= x1 + 2 and ys.min() >= y0 - 2 and ys.max() <= y1 + 2
            assert len(dets[:2].rle()) == 2
        else:
            assert dets.keypoints.shape == (len(dets), 17, 3) and dets.keypoint_scores.shape == (len(dets), 17)
            assert ((dets.keypoint_scores >= 0) & (dets.keypoint_scores <= 1)).all()


@pytest.mark.parametrize("kind", ["seg", "26seg"])
def test_masks_at_the_original_size_are_ultralytics_retina_masks(yolo: dict[str, tuple[Any, Path]], kind: str) -> None:
    """Detections.masks (original pixels) against Ultralytics' process_mask_native (its retina_masks path) on
    the same prototypes, coefficients and boxes, on two photos whose aspect ratios need letterbox padding."""
    from ultralytics.utils.ops import process_mask_native, scale_boxes

    predictor = edgevision.load(yolo[kind][1], "onnxruntime-fp32")
    compared = 0
    for photo in (PHOTO, PHOTO.with_name("Minduka_Present_Blue_Pack.png")):
        image = read_image(photo)
        dets = predictor.predict(image)
        source = dets.mask_source
        theirs = process_mask_native(torch.from_numpy(source.protos), torch.from_numpy(source.coefficients),
                                     scale_boxes(predictor.input.size, torch.from_numpy(source.boxes.copy()), image.shape),
                                     image.shape[:2]).bool().numpy()
        ours = dets.masks
        assert ours.shape == theirs.shape and len(ours) >= 5
        inter, union = (ours & theirs).sum(axis=(1, 2)), (ours | theirs).sum(axis=(1, 2))
        drawn = union > 0
        assert drawn.sum() >= 5 and inter.sum() >= 0.999 * union.sum(), (inter.sum(), union.sum())
        assert (inter[drawn] / union[drawn]).min() >= 0.99  # 0.9995 and above measured
        compared += int(drawn.sum())
    assert compared >= 10


def test_a_pickled_checkpoint_needs_trust(tmp_path: Path) -> None:
    from ultralytics.nn.tasks import DetectionModel

    ckpt = tmp_path / "best.pt"
    torch.save({"model": DetectionModel("yolov8n.yaml", nc=3, verbose=False), "train_args": {"imgsz": 256}}, ckpt)
    data = {"name": "y", "model": {"source": "ultralytics", "checkpoint": str(ckpt)},
            "targets": [{"backend": "onnxruntime", "precision": "fp32"}]}
    with pytest.raises(ModelSourceError, match="trust_checkpoint: true"):
        parse_recipe(data)
    recipe = parse_recipe({**data, "model": {**data["model"], "trust_checkpoint": True}})
    from PIL import Image

    assert Image.open.__module__.startswith("PIL")  # Ultralytics' process-wide patch of it is undone
    assert recipe.task == "detection" and recipe.input.size == (256, 256) and recipe.input.resize == "letterbox"
    assert recipe.model.labels == ["0", "1", "2"]  # the checkpoint's names
    with pytest.raises(RecipeError, match="set task: detection"):
        parse_recipe({**data, "task": "keypoints", "model": {**data["model"], "trust_checkpoint": True}})


@pytest.mark.parametrize("name", ["resnet10t", "deit_tiny_patch16_224"])
def test_timm_against_timm_eager(tmp_path: Path, name: str) -> None:
    import timm

    data = {"name": name, "task": "classification", "model": {"source": f"timm:{name}", "labels": LABELS},
            "data": {"val": {"source": "shapes", "count": 4, "seed": 1, "max_objects": 1}},
            "targets": [{"backend": "onnxruntime", "precision": "fp32"}, {"backend": "openvino", "precision": "fp32"}],
            "verify": {"images": 4, "timing_rounds": 0}, "output": str(tmp_path / name)}
    cfg = timm.models.get_pretrained_cfg(name)
    recipe = parse_recipe(data)
    assert recipe.input.size == tuple(cfg.input_size[1:]) and recipe.input.mean == tuple(cfg.mean)
    data["model"]["checkpoint"] = str(reestimated_checkpoint(recipe.model_dump(mode="json"), tmp_path / "w.pt"))
    api.compile(parse_recipe(data), reporter=Quiet(), threads=2)
    model = build_model(parse_recipe(data).model)
    assert type(model).__module__.startswith("timm.")
    for variant in ("onnxruntime-fp32", "openvino-fp32"):
        predictor = edgevision.load(tmp_path / name, variant)
        feeds, _ = predictor.feeds([read_image(PHOTO)])
        with torch.no_grad():
            eager = model(torch.from_numpy(feeds[predictor.input_name])).numpy()
        logits = predictor.runner.infer(feeds)["logits"]
        assert eager.std() > 1e-3  # logits that differ between classes
        assert np.abs(logits - eager).max() <= 1e-3 * max(1.0, np.abs(eager).max())
        assert logits.argmax() == eager.argmax()


def test_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real = builtins.__import__

    def no_timm(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "timm":
            raise ImportError("No module named 'timm'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_timm)
    with pytest.raises(ModelSourceError, match=r"edgevision\[timm\]"):
        parse_recipe({"name": "t", "task": "classification", "model": {"source": "timm:resnet18", "num_classes": 3},
                      "targets": [{"backend": "onnxruntime", "precision": "fp32"}]})


@pytest.mark.slow
def test_an_ultralytics_training_compiles_with_its_own_map(tmp_path: Path) -> None:
    """Ultralytics trains YOLOv8n briefly on shapes images written in its own format; edgevision
    compiles the checkpoint it saves for ONNX Runtime and ncnn (fp32, fp16) and scores the same validation
    images within 1 mAP point of Ultralytics' own validator (both: conf 0.001, IoU 0.7, every class above
    the threshold)."""
    from ultralytics import YOLO

    from yolo_data import write_yolo_dataset

    data = write_yolo_dataset(tmp_path / "data", 128, {"train": (480, 0), "val": (60, 1)})
    YOLO("yolov8n.yaml").train(data=str(data), epochs=8, imgsz=128, batch=16, device="cpu", workers=0, seed=0,
                               warmup_epochs=1, project=str(tmp_path), name="train", plots=False, amp=False, val=False)
    best = tmp_path / "train" / "weights" / "last.pt"  # val=False: no best.pt selection, the last epoch
    theirs = YOLO(str(best)).val(data=str(data), imgsz=128, batch=16, conf=0.001, iou=0.7, device="cpu", plots=False)
    recipe = parse_recipe({
        "name": "trained", "model": {"source": "ultralytics", "checkpoint": str(best), "trust_checkpoint": True},
        "export": {"nms": {"score_threshold": 0.001, "multi_label": True}},
        "data": {"val": {"source": "shapes", "count": 60, "seed": 1}},
        "targets": [{"backend": "onnxruntime", "precision": "fp32"}, {"backend": "ncnn", "precision": "fp32"},
                    {"backend": "ncnn", "precision": "fp16"}],
        "verify": {"images": 4, "timing_rounds": 0}, "output": str(tmp_path / "trained")})
    assert recipe.input.size == (128, 128) and recipe.model.labels == ["circle", "square", "triangle"]
    manifest = api.compile(recipe, reporter=Quiet(), threads=2)
    ours = {v["name"]: v["accuracy"]["map"] for v in manifest["variants"] if v["status"] == "passed"}
    print(f"mAP@[.5:.95] on 60 images: edgevision {ours}, Ultralytics val {float(theirs.box.map):.4f}")
    assert float(theirs.box.map) > 0.05  # it learned something: the comparison has something in it
    assert len(ours) == 3, [(v["name"], v["reasons"]) for v in manifest["variants"]]
    for name, value in ours.items():  # ncnn: multi_label, so no best-class cut; the NMS runs on the host
        assert abs(value - float(theirs.box.map)) <= 0.01, (name, value, float(theirs.box.map))


def test_the_exported_branch_of_a_two_branch_head_is_the_predictors_or_the_recipes() -> None:
    """YOLO26 / YOLOv10 heads: unset export.end2end takes the branch Ultralytics' predictor runs by default
    (nms=None: one-to-many, unless fusion left only the one-to-one branch); a choice the model cannot honour
    is a named error, not a silent fallback."""
    from ultralytics.nn.tasks import DetectionModel

    from edgevision.export.ultralytics import UltralyticsAdapter

    model = DetectionModel("yolo26n.yaml", nc=3, verbose=False).eval()
    default = UltralyticsAdapter(model, (128, 128), "detection")
    assert default.branch == "one-to-many (NMS)" and default.output_names == ["boxes", "scores"]
    e2e = UltralyticsAdapter(model, (128, 128), "detection", end2end=True)
    assert e2e.branch == "one-to-one (NMS-free top-k)" and e2e.output_names == ["num_dets", "boxes", "scores", "labels"]
    with pytest.raises(ValueError, match="multi_label is for the one-to-many"):
        e2e.nms_params(multi_label=True)
    with pytest.raises(ExportError, match="no one-to-one"):
        UltralyticsAdapter(DetectionModel("yolov8n.yaml", nc=3, verbose=False), (128, 128), "detection", end2end=True)
    model.end2end = True
    model.model[-1].fuse()  # Ultralytics' fusion keeps only the selected branch
    assert UltralyticsAdapter(model, (128, 128), "detection").branch == "one-to-one (NMS-free top-k)"
    with pytest.raises(ExportError, match="removed when it was fused"):
        UltralyticsAdapter(model, (128, 128), "detection", end2end=False)
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    from edgevision.export.detection import detection_adapter

    ssd = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=4)
    with pytest.raises(ExportError, match="SSD has none: remove export.end2end"):
        detection_adapter(ssd, (128, 128), end2end=True)


def test_ultralytics_own_predictor_runs_the_branch_our_default_exports() -> None:
    """The unset export.end2end follows Ultralytics' predictor: in 8.4.190 its nms=None default runs the one-to-many
    branch even for YOLO26, and nms=False the one-to-one one. A later Ultralytics that changes this fails here."""
    from ultralytics import YOLO

    from edgevision.export.ultralytics import UltralyticsAdapter

    yolo = YOLO("yolo26n.yaml")
    image = read_image(PHOTO)
    yolo.predict(image, imgsz=128, verbose=False)
    default = bool(yolo.predictor.model.end2end)
    yolo.predict(image, imgsz=128, verbose=False, nms=False)
    assert bool(yolo.predictor.model.end2end) and not default
    assert UltralyticsAdapter(yolo.model, (128, 128), "detection").end2end == default
