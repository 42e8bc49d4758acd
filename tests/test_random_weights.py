"""Random weights that measure something (random_weights.py): a random RetinaNet / FCOS class head
answers its prior everywhere, so nothing passes the score threshold and parity compares nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import recipe_dict
from edgevision.data import ShapesDataset
from edgevision.models.sources import build_model
from edgevision.random_weights import reestimated_checkpoint
from edgevision.recipe import ModelSpec


@pytest.mark.parametrize("source", ["retinanet_resnet50_fpn", "fcos_resnet50_fpn"])
def test_spread_prior_head_detects_something(source: str, tmp_path: Path) -> None:
    data = recipe_dict("r", "detection", source, 128, tmp_path)
    images = [torch.from_numpy(ShapesDataset(2, seed=3, size=(128, 128))[i].image).permute(2, 0, 1).float() / 255
              for i in range(2)]

    def detections(model: torch.nn.Module) -> list[int]:
        model.eval().transform.min_size, model.transform.max_size = (128,), 128
        with torch.no_grad():
            return [len(out["scores"]) for out in model(images)]

    torch.manual_seed(0)
    assert detections(build_model(ModelSpec(**data["model"]), load_checkpoint=False)) == [0, 0]  # the prior: nothing
    ckpt = reestimated_checkpoint(data, tmp_path / "r.pt", images=4)
    spread = build_model(ModelSpec(**{**data["model"], "checkpoint": str(ckpt)}))
    assert all(0 < n < spread.detections_per_img for n in detections(spread))  # some, not a saturated head
