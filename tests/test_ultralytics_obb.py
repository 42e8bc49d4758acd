"""Ultralytics OBB heads (YOLO11-obb with its rotated NMS, YOLO26-obb's one-to-one branch) as task
oriented_detection: the artifacts against Ultralytics' own non_max_suppression(rotated=True) on the same
tensor, the graph's rotated NMS against Ultralytics' fast_nms + batch_probiou, and rotated boxes in original
pixels, polygons, COCO / JSON entries and drawings from predict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pytest
import sklearn.datasets
import torch

import edgevision
from edgevision import api
from edgevision.errors import RecipeError
from edgevision.export.obb import probiou, rotated_nms
from edgevision.models import external
from edgevision.models.sources import build_model
from edgevision.random_weights import reestimated_checkpoint
from edgevision.recipe import parse_recipe
from edgevision.runtime.images import read_image
from conftest import Quiet
from oracles import ultralytics_reference

external._import("ultralytics", "ultralytics")
LABELS = ["circle", "square", "triangle"]
MODELS = {"11": ("yolo11n-obb.yaml", None), "26-e2e": ("yolo26n-obb.yaml", True)}
# the random heads put 400-1600 boxes above 0.25 on the photos: the rotated NMS takes all 2100 anchors of a 320
# input (the default, 1000, bounds its matrix; Ultralytics' own bound is 30000)
TOP_K = 2100
VARIANTS = ("onnxruntime-fp32", "openvino-fp32")


def _recipe(name: str, config: str, root: Path, **extra: Any) -> dict[str, Any]:
    return {"name": name, "model": {"source": f"ultralytics:{config}", "labels": LABELS}, "input": {"size": 320},
            "data": {"val": {"source": "shapes", "count": 6, "seed": 1}},
            "targets": [{"backend": b, "precision": "fp32"} for b in ("onnxruntime", "openvino", "tensorrt")],
            "verify": {"images": 4, "timing_rounds": 0}, "output": str(root / name), **extra}


@pytest.fixture(scope="module")
def obb(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, Path]]:
    root, out = tmp_path_factory.mktemp("obb"), {}
    for kind, (config, end2end) in MODELS.items():
        data = _recipe(f"obb-{kind}", config, root,
                       export={"end2end": True} if end2end else {"nms": {"pre_nms_top_k": TOP_K}})
        data["model"]["checkpoint"] = str(reestimated_checkpoint(parse_recipe(data).model_dump(mode="json"),
                                                                 root / f"{kind}.pt"))
        recipe = parse_recipe(data)
        assert recipe.task == "oriented_detection" and recipe.input.resize == "letterbox"  # from the model YAML
        manifest = api.compile(recipe, reporter=Quiet(), threads=2)
        assert {v["name"]: v["status"] for v in manifest["variants"]} == {
            "onnxruntime-fp32": "passed", "openvino-fp32": "passed", "tensorrt-fp32": "passed"}
        assert all(v["parity"]["detections"] >= 10 for v in manifest["variants"])
        out[kind] = (build_model(recipe.model), root / data["name"])
    return out


def _photos() -> list[np.ndarray]:
    return [read_image(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"),
            *sklearn.datasets.load_sample_images().images]


def _match(ref: dict[str, np.ndarray], rboxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
           score_tol: float) -> None:
    """Every one of Ultralytics' rotated boxes is ours: same class, centre and size within 0.05 px, the
    same angle within 1e-3 rad (0.06 degrees), the score within score_tol."""
    assert len(rboxes) == len(ref["rboxes"])
    for box, score, label in zip(ref["rboxes"], ref["scores"], ref["labels"]):
        gap = np.abs(rboxes - box).max(axis=1) + 1e3 * (labels != label)
        j = int(gap.argmin())
        assert np.abs(rboxes[j, :4] - box[:4]).max() <= 0.05 and abs(rboxes[j, 4] - box[4]) <= 1e-3, (rboxes[j], box)
        assert abs(scores[j] - score) <= score_tol


@pytest.mark.parametrize(("kind", "variant"), [(k, v) for k in MODELS for v in VARIANTS])
def test_matches_ultralytics_own_prediction(obb: dict[str, tuple[Any, Path]], kind: str, variant: str) -> None:
    model, artifact = obb[kind]
    predictor = edgevision.load(artifact, variant)
    feeds, _ = predictor.feeds(_photos())
    ours = predictor.runner.infer(feeds)
    theirs = ultralytics_reference(model, torch.from_numpy(feeds[predictor.input_name]), end2end=bool(MODELS[kind][1]))
    for i, ref in enumerate(theirs):
        n = int(ours["num_dets"][i, 0])
        # the random heads' class logits are spread (random_weights): float noise scaled to 1.1e-4 seen
        _match(ref, ours["rboxes"][i, :n], ours["scores"][i, :n], ours["labels"][i, :n], 5e-4)
        assert not ours["rboxes"][i, n:].any() and not ours["boxes"][i, n:].any()  # padding rows zero
    angles = np.concatenate([r["rboxes"][:, 4] for r in theirs])
    assert sum(len(r["scores"]) for r in theirs) >= 10 and len({int(v) for r in theirs for v in r["labels"]}) >= 2
    assert np.ptp(angles) >= 0.5  # boxes at many angles: a comparison with something in it


@pytest.mark.parametrize("seed", range(6))
def test_graph_rotated_nms_is_ultralytics_fast_nms(seed: int) -> None:
    """Clusters of overlapping rotated boxes of three classes, some below the score threshold: the graph's
    rotated NMS keeps what Ultralytics' non_max_suppression(rotated=True) keeps, in its order."""
    from ultralytics.utils.metrics import batch_probiou
    from ultralytics.utils.nms import non_max_suppression

    g = torch.Generator().manual_seed(seed)
    n, classes = 400, 3
    centres = torch.rand(12, 2, generator=g) * 300
    xy = centres[torch.randint(0, 12, (n,), generator=g)] + torch.randn(n, 2, generator=g) * 6
    rboxes = torch.cat([xy, 10 + torch.rand(n, 2, generator=g) * 40, (torch.rand(n, 1, generator=g) - 0.25) * torch.pi], 1)
    scores = torch.rand(n, classes, generator=g) ** 3
    pairs = probiou(rboxes.unsqueeze(0))[0]
    assert torch.allclose(pairs, batch_probiou(rboxes, rboxes), atol=1e-6)
    best, labels = scores.max(dim=1)
    num, kept_scores, kept_labels, index = rotated_nms(rboxes[None], best[None], labels[None], 0.25, 0.7, 1000, 300)
    preds = torch.cat([rboxes[:, :4], scores, rboxes[:, 4:]], 1).T.unsqueeze(0)  # [1, 4 + nc + 1, N]
    theirs = non_max_suppression(preds, 0.25, 0.7, max_det=300, nc=classes, rotated=True)[0]
    k = int(num[0, 0])
    assert 20 <= k == len(theirs) < int((best > 0.25).sum())  # some kept, some suppressed
    assert torch.allclose(rboxes[index[0, :k]][:, :4], theirs[:, :4]) and torch.equal(kept_labels[0, :k].long(), theirs[:, 5].long())
    assert torch.allclose(kept_scores[0, :k], theirs[:, 4])


def test_predict_gives_rotated_boxes_in_original_pixels(obb: dict[str, tuple[Any, Path]]) -> None:
    """predict() maps the rotated boxes back through the letterbox as Ultralytics' scale_boxes(xywh=True)
    does; polygons are its xywhr2xyxyxyxy; d.boxes hold the polygons; COCO and JSON entries carry them."""
    from ultralytics.utils.ops import scale_boxes, xywhr2xyxyxyxy

    from edgevision.runtime.annotate import annotate

    model, artifact = obb["11"]
    predictor = edgevision.load(artifact, "onnxruntime-fp32")
    photo = _photos()[1]  # 427x640: a letterbox with padding above and below
    feeds, _ = predictor.feeds([photo])
    ref = ultralytics_reference(model, torch.from_numpy(feeds[predictor.input_name]))[0]
    expected = torch.from_numpy(ref["rboxes"]).clone()
    expected[:, :4] = scale_boxes((320, 320), expected[:, :4], photo.shape, xywh=True)
    found = predictor.predict(photo)
    assert len(found) == len(expected) >= 3 and found.rotated is not None
    order = [int(np.abs(found.rotated - e.numpy()).sum(axis=1).argmin()) for e in expected]
    assert np.abs(found.rotated[order] - expected.numpy()).max() <= 0.05
    polygons = found.polygons
    assert np.abs(polygons[order] - xywhr2xyxyxyxy(expected).numpy()).max() <= 0.05
    around = np.concatenate([polygons.min(axis=1), polygons.max(axis=1)], axis=1)  # the boxes around the polygons,
    around[:, 0::2] = around[:, 0::2].clip(0, photo.shape[1])  # clipped to the photo as every detector's boxes are
    around[:, 1::2] = around[:, 1::2].clip(0, photo.shape[0])
    # up to 1 px apart: the letterboxed content is 320x214 for 640x427, so x and y scale by 0.5 and 0.5012, and the
    # box around the rotated box in network pixels, scaled, differs from the one around the scaled polygon by that
    assert np.abs(found.boxes - around).max() <= 1.0
    entry = found.to_coco(1, {"circle": 1, "square": 2, "triangle": 3})[0]
    assert len(entry["segmentation"][0]) == 8 and len(entry["rbox"]) == 5
    item = found.to_dict()["detections"][0]
    assert len(item["polygon"]) == 4 and len(item["rbox"]) == 5
    drawn = annotate(photo[..., ::-1].copy(), found)
    x, y = (polygons[0, 0] + polygons[0, 1]) / 2  # the middle of the best box's first edge
    xi, yi = int(round(x)), int(round(y))
    if 2 <= xi < photo.shape[1] - 2 and 2 <= yi < photo.shape[0] - 2:
        assert (drawn[yi - 2:yi + 3, xi - 2:xi + 3] != photo[..., ::-1][yi - 2:yi + 3, xi - 2:xi + 3]).any()


def test_oriented_detection_needs_letterbox_and_is_refused_by_ncnn(tmp_path: Path) -> None:
    data = _recipe("o", "yolo11n-obb.yaml", tmp_path)
    with pytest.raises(RecipeError, match="input.resize: stretch would turn rotated boxes into parallelograms"):
        parse_recipe({**data, "input": {"size": 320, "resize": "stretch"}})
    with pytest.raises(RecipeError, match="backend 'ncnn' cannot carry task 'oriented_detection': its rotated NMS"):
        parse_recipe({**data, "targets": [{"backend": "ncnn"}]})
