"""Every R-CNN builder torchvision has compiles and matches torchvision eager on ONNX Runtime and
OpenVINO, with detections to compare (issue 15, items 1 and 2). The _v2 builders put BatchNorm in
their heads: Mask R-CNN v2's mask head runs on a data-dependent number of kept detections, which
did not export until the head always got one more RoI than kept.

Covered elsewhere: fasterrcnn_mobilenet_v3_large_320_fpn (test_two_stage.py), maskrcnn_resnet50_fpn
and keypointrcnn_resnet50_fpn (test_instances.py). Small inputs and few images keep CI time bounded.
"""

from __future__ import annotations

import pytest
import torch
import torchvision

BUILDERS = [
    ("fasterrcnn_resnet50_fpn", "detection"),
    ("fasterrcnn_resnet50_fpn_v2", "detection"),
    ("fasterrcnn_mobilenet_v3_large_fpn", "detection"),
    ("maskrcnn_resnet50_fpn_v2", "instance_segmentation"),
]
# Fewer proposals and detections than torchvision's defaults (1000 / 100): the same graph, a tenth of
# the box and mask head work, so the four builders fit CI's time.
CHEAP = {"data": {"val": {"source": "shapes", "count": 2, "seed": 1, "max_objects": 3}},
         "verify": {"images": 2, "timing_rounds": 0}}
SMALL = {"rpn_pre_nms_top_n_test": 150, "rpn_post_nms_top_n_test": 60, "box_detections_per_img": 20}


def test_every_rcnn_builder_is_covered() -> None:
    """A builder torchvision adds later must be added here (or to the tests named above)."""
    names = {n for n in torchvision.models.list_models(module=torchvision.models.detection) if "rcnn" in n}
    covered = {b for b, _ in BUILDERS} | {"fasterrcnn_mobilenet_v3_large_320_fpn", "maskrcnn_resnet50_fpn",
                                          "keypointrcnn_resnet50_fpn"}
    assert names == covered


@pytest.mark.slow
@pytest.mark.parametrize("builder,task", BUILDERS, ids=[b for b, _ in BUILDERS])
def test_rcnn_builder_compiles_and_matches_torchvision(compiled, builder: str, task: str) -> None:  # noqa: ANN001
    manifest, _ = compiled(f"builder-{builder}", task, builder, 128, model={"kwargs": SMALL}, **CHEAP)
    assert manifest["export"]["ops"]["RoiAlign"] >= 1 and "Loop" not in manifest["export"]["ops"]
    assert {v["name"] for v in manifest["variants"]} == {"onnxruntime-fp32", "openvino-fp32"}
    for v in manifest["variants"]:
        parity = v["parity"]
        assert v["status"] == "passed", (v["name"], v["reasons"])
        assert 20 <= parity["detections"] <= 2 * 20 and parity["candidate_detections"] >= 20, parity  # something compared
        assert min(parity["matched"], parity["matched_candidate"]) >= 0.99 and parity["max_score_diff"] < 1e-3, parity
        if task == "instance_segmentation":
            assert parity["masks_close"] >= 0.99, parity
    if builder.endswith("_v2"):
        model = getattr(torchvision.models.detection, builder)(weights=None, weights_backbone=None, num_classes=4)
        heads = model.roi_heads.mask_head if task == "instance_segmentation" else model.roi_heads.box_head
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in heads.modules())  # the case the issue found
