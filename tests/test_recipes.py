"""The shipped example recipes (issue 15, item 7): one per model family, each valid, each saying how
to compile it and where its checkpoint comes from; the cheap ones compiled here with random weights."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import Quiet, ROOT
from edgevision import api
from edgevision.random_weights import reestimated_checkpoint
from edgevision.recipe import load_recipe, parse_recipe

RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
FAMILIES = {  # the README's families -> the builder its example recipe uses
    "classification": "mobilenet_v3_large", "ssd": "ssdlite320_mobilenet_v3_large", "retinanet": "retinanet_resnet50_fpn_v2",
    "fcos": "fcos_resnet50_fpn", "yolo": "yolo", "faster r-cnn": "fasterrcnn_mobilenet_v3_large_fpn",
    "r-cnn on proposals": "mobilenet_v3_small", "mask r-cnn": "maskrcnn_resnet50_fpn_v2",
    "keypoint r-cnn": "keypointrcnn_resnet50_fpn", "deeplab": "deeplabv3_mobilenet_v3_large", "fcn": "fcn_resnet50",
    "u-net": "unet", "segnet": "segnet", "ultralytics": "ultralytics:yolov8n.yaml",
    "ultralytics classify": "ultralytics:yolo26n-cls.yaml", "rt-detr": "ultralytics:rtdetr-l.yaml", "timm": "timm:efficientnet_b0",
}


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_is_valid_and_says_how_to_use_it(path: Path) -> None:
    recipe = load_recipe(path)
    text = path.read_text()
    assert recipe.name == path.stem and recipe.output_dir == Path("build") / path.stem
    assert f"edgevision compile recipes/{path.name}" in text
    assert str(recipe.model.checkpoint).startswith("build/checkpoints/")
    if recipe.train is None:  # nothing to train it with here: say how to get weights
        assert f"edgevision random-checkpoint recipes/{path.name} {recipe.model.checkpoint}" in text
    comments = [ln for ln in text.splitlines() if ln.startswith("#")]
    assert len(comments) >= 3 and all(len(ln) <= 120 for ln in text.splitlines())


def test_every_family_has_a_recipe() -> None:
    sources = {load_recipe(p).model.source for p in RECIPES}
    missing = {family: builder for family, builder in FAMILIES.items() if builder not in sources}
    assert not missing, missing
    proposals = [load_recipe(p) for p in RECIPES if load_recipe(p).export.proposals is not None]
    assert proposals and re.search(r"proposals=", (ROOT / "recipes" / f"{proposals[0].name}.yaml").read_text())


@pytest.mark.parametrize("name", ["classifier-mobilenetv3", "ssdlite"])
def test_cheap_recipe_compiles_with_random_weights(name: str, tmp_path: Path) -> None:
    """As the recipe's header says: random-checkpoint, then compile (FP32 targets and few images here)."""
    data = load_recipe(ROOT / "recipes" / f"{name}.yaml").model_dump(mode="json")
    data["model"]["checkpoint"] = str(reestimated_checkpoint(data, tmp_path / f"{name}.pt"))
    data.update(train=None, calibration=None, output=str(tmp_path / name),
                targets=[{"backend": "onnxruntime", "precision": "fp32"}, {"backend": "openvino", "precision": "fp32"}],
                verify={**data["verify"], "images": 2, "timing_rounds": 0})
    data["data"] = {"val": {**data["data"]["val"], "count": 4}}
    manifest = api.compile(parse_recipe(data), reporter=Quiet(), threads=2)
    assert [v["status"] for v in manifest["variants"]] == ["passed", "passed"]
    assert manifest["verified_on"].startswith("2 images from data.val")
