"""edgevision's YOLO-style detector: assignment, decoding, export form, and that it learns."""

from __future__ import annotations

import pytest
import torch

from edgevision.models.yolo import STRIDES, assign, grid, yolo


def test_assignment_picks_cells_inside_the_box_at_the_right_level() -> None:
    points, strides, counts = grid((128, 128), [(16, 16), (8, 8), (4, 4)])
    assert counts == [256, 64, 16] and points.shape == (336, 2)
    boxes = torch.tensor([[10.0, 10.0, 40.0, 30.0], [20.0, 20.0, 120.0, 120.0]])  # small, large
    idx = assign(points, strides, boxes)
    for k, box in enumerate(boxes):
        cells = idx == k
        assert cells.any()
        p = points[cells]
        assert ((p[:, 0] > box[0]) & (p[:, 0] < box[2]) & (p[:, 1] > box[1]) & (p[:, 1] < box[3])).all()
    # level ranges (max side): stride 8 [0, 128], 16 [64, 256], 32 [128, inf)
    assert set(strides[idx == 0].tolist()) == {8.0}  # 30 px
    assert set(strides[idx == 1].tolist()) == {8.0, 16.0}  # 100 px
    assert (assign(points, strides, torch.zeros((0, 4))) == -1).all()


def test_overlapping_boxes_go_to_the_smaller_one() -> None:
    points, strides, _ = grid((64, 64), [(8, 8), (4, 4), (2, 2)])
    boxes = torch.tensor([[0.0, 0.0, 64.0, 64.0], [16.0, 16.0, 40.0, 40.0]])
    idx = assign(points, strides, boxes)
    centre = ((points - 28).abs().max(dim=1).values < 4) & (strides == 8)
    assert (idx[centre] == 1).all()


def test_decode_and_export_adapter_shapes() -> None:
    model = yolo(3, "n").eval()
    x = torch.randn(2, 3, 96, 128)
    boxes, scores = model(x)
    n = sum((96 // s) * (128 // s) for s in STRIDES)
    assert boxes.shape == (2, n, 4) and scores.shape == (2, n, 3)
    assert (boxes[..., 0::2] >= 0).all() and (boxes[..., 0::2] <= 128).all() and (boxes[..., 1::2] <= 96).all()
    assert (boxes[..., 2] >= boxes[..., 0]).all()
    adapter = model.export_adapter((96, 128))
    b2, s2 = adapter(x)
    assert torch.equal(b2, boxes) and torch.equal(s2, scores)
    assert adapter.nms_params(score_threshold=0.3).score_threshold == 0.3
    with pytest.raises(ValueError, match="size must be one of"):
        yolo(3, "xl")


def test_it_learns_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = yolo(2, "n").train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.randn(4, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 30.0, 40.0], [34.0, 30.0, 60.0, 58.0]]), "labels": torch.tensor([0, 1])}] * 4
    losses = []
    for _ in range(40):
        loss = model.loss(model(x), targets, (64, 64))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.4 * losses[0], losses[::10]
