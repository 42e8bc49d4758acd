"""Training torchvision's detectors on edgevision's pre-processing (train/torchvision_det.py): the targets
(boxes and masks in network pixels, letterboxed as the image), the flip, the losses, and the recipe errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import Quiet, recipe_dict
from edgevision import api
from edgevision.data import ShapesDataset, open_dataset
from edgevision.errors import RecipeError
from edgevision.models.sources import build_model
from edgevision.recipe import parse_recipe
from edgevision.train.loop import _flip, _loss_function, _targets


def _recipe(tmp_path: Path, task: str, source: str, **extra):  # noqa: ANN003, ANN202
    data = recipe_dict("t", task, source, 128, tmp_path, **extra)
    data["model"]["checkpoint"] = str(tmp_path / "t.pt")
    data["data"]["train"] = {"source": "shapes", "count": 4, "seed": 3}
    data["train"] = {"epochs": 1, "batch": 2}
    return parse_recipe(data)


def test_instance_targets_are_placed_as_the_image_and_flip_with_it(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, "instance_segmentation", "maskrcnn_resnet50_fpn", input={"resize": "letterbox"})
    dataset = ShapesDataset(4, seed=3, size=(96, 160))  # letterboxed into 128x128
    spec = recipe.input.spec()
    images, targets = _targets(recipe, dataset, np.arange(2), spec)
    assert images.shape == (2, 3, 128, 128)
    for t in targets:
        masks, boxes = t["masks"].numpy(), t["boxes"].numpy()
        assert masks.shape[1:] == (128, 128) and masks.dtype == np.uint8 and len(masks) == len(boxes) > 0
        assert t["labels"].min() >= 1  # class 0 is background
        for mask, box in zip(masks, boxes):  # each mask's extent is its box (both scaled by 0.8, padded by 25.6 rows)
            ys, xs = np.nonzero(mask)
            assert abs(xs.min() - box[0]) <= 1.5 and abs(xs.max() + 1 - box[2]) <= 1.5
            assert abs(ys.min() - box[1]) <= 1.5 and abs(ys.max() + 1 - box[3]) <= 1.5
        assert not masks[:, :24].any() and not masks[:, -24:].any()  # letterbox bands stay empty
    x, flipped = _flip(torch.from_numpy(images), targets, "instance_segmentation", "nchw", 128)
    for t, f in zip(targets, flipped):
        assert torch.equal(f["masks"], t["masks"].flip(-1)) and torch.equal(f["labels"], t["labels"])
        ys, xs = np.nonzero(f["masks"][0].numpy())
        assert abs(xs.min() - f["boxes"][0, 0].item()) <= 1.5 and abs(xs.max() + 1 - f["boxes"][0, 2].item()) <= 1.5


def _one_step(recipe):  # noqa: ANN001, ANN202
    """The model after a training loss on 2 shapes images was back-propagated (the loss is finite and > 0)."""
    torch.manual_seed(0)
    model = build_model(recipe.model, load_checkpoint=False).train()
    dataset = open_dataset(recipe.data.train, recipe.input.size)
    images, targets = _targets(recipe, dataset, np.arange(2), recipe.input.spec())
    loss = _loss_function(recipe, model, dataset)(torch.from_numpy(images), targets)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    return model


def _gets_gradients(module: torch.nn.Module) -> bool:
    grads = [p.grad for p in module.parameters()]
    return all(g is not None for g in grads) and sum(g.abs().sum().item() for g in grads) > 0


def test_mask_rcnn_step_trains_every_head(tmp_path: Path) -> None:
    model = _one_step(_recipe(tmp_path, "instance_segmentation", "maskrcnn_resnet50_fpn"))
    heads = {"rpn": model.rpn.head, "box": model.roi_heads.box_predictor, "mask": model.roi_heads.mask_predictor}
    for name, head in heads.items():
        assert _gets_gradients(head), name
    assert type(model.transform).__name__ == "GeneralizedRCNNTransform"  # put back after the step


def test_training_recipe_errors(tmp_path: Path) -> None:
    no_background = _recipe(tmp_path, "detection", "fasterrcnn_mobilenet_v3_large_320_fpn",
                            model={"labels": ["circle", "square", "triangle"]})
    with pytest.raises(RecipeError, match=r"model.labels: FasterRCNN learns class 0 as background.*'circle'.*\[background, circle"):
        api.train(no_background, reporter=Quiet())
    no_mask_head = _recipe(tmp_path, "instance_segmentation", "fasterrcnn_mobilenet_v3_large_320_fpn")
    with pytest.raises(RecipeError, match="task instance_segmentation: model.source 'fasterrcnn_mobilenet_v3_large_320_fpn' has no mask head"):
        api.train(no_mask_head, reporter=Quiet())
    keypoints = _recipe(tmp_path, "keypoints", "keypointrcnn_resnet50_fpn")
    with pytest.raises(RecipeError, match="task 'keypoints': training is not supported"):
        api.train(keypoints, reporter=Quiet())
    assert not (tmp_path / "t.pt").exists()


@pytest.mark.parametrize("source,head", [("ssdlite320_mobilenet_v3_large", "head.classification_head"),
                                         ("retinanet_resnet50_fpn", "head.classification_head"),
                                         ("fcos_resnet50_fpn", "head.regression_head")])
def test_one_stage_torchvision_detectors_train_on_their_own_losses(source: str, head: str, tmp_path: Path) -> None:
    model = _one_step(_recipe(tmp_path, "detection", source))
    assert _gets_gradients(model.get_submodule(head))
