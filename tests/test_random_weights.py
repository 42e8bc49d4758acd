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


@pytest.mark.parametrize("source,dead", [
    ("vit_b_16", "heads.head: zero-initialised Linear"),           # torchvision ViT: zero head
    ("timm:mixer_s16_224", "head: zero-initialised Linear"),       # timm MLP-Mixer: zero head
    ("timm:resmlp_12_224", "layer scales (e.g. blocks.0.ls1"),     # 1e-4 layer scales (and a zero head)
    ("timm:convnext_atto", "layer scales (e.g. stages.0.blocks.0.gamma"),  # 1e-6 layer scales
])
def test_random_checkpoints_of_dead_initialisations_answer_something(source: str, dead: str) -> None:
    """Zero-initialised heads answer constant logits, and tiny layer scales leave every block next to the
    identity: parity on such a model compares almost nothing. wake_up re-draws / raises them and says what."""
    import matplotlib
    import numpy as np
    from PIL import Image

    from edgevision.random_weights import wake_up

    photo = Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB")
    x = torch.from_numpy(np.array(photo.resize((224, 224)))).permute(2, 0, 1)[None].float() / 255
    torch.manual_seed(0)
    model = build_model(ModelSpec(source=source, num_classes=10), load_checkpoint=False).eval()
    with torch.no_grad():
        before = model(x)
        changes = wake_up(model)
        after = model(x)
    assert any(dead in line for line in changes), changes
    if "head" in dead:
        assert float(before.std()) == 0.0 and float(after.std()) > 1e-3  # constant logits, then not
    else:  # the blocks now change what the network answers
        assert float((after - before).norm()) > 0.1 * float(before.norm()), (after, before)
    assert wake_up(model) == []  # nothing dead is left
