"""A minimal, honest training loop (CPU is fine) for the recipe's model on its data.train source.

Images go through the runtime's own numpy pre-processing, so the model is trained on exactly
what it will see when deployed. Augmentation: horizontal flips. AdamW with a one-cycle schedule.
Segmentation uses cross-entropy + soft Dice: with cross-entropy alone the smallest class of the
shapes set (triangles, 3% of pixels) was still at 0.02 IoU after 1000 steps; with Dice it is
learnt within 600. torchvision's detectors train on their own losses (train/torchvision_det.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from edgevision.data import open_dataset
from edgevision.data.types import Dataset
from edgevision.errors import DataError, RecipeError
from edgevision.export.onnx_export import ExportWrapper
from edgevision.models.sources import build_model
from edgevision.recipe import Recipe
from edgevision.records import InputSpec
from edgevision.runtime.preprocess import preprocess, resize_nearest
from edgevision.train.torchvision_det import background_is_class_zero, detection_loss, is_torchvision_detector

IGNORE = 255  # letterbox padding in segmentation targets


def _targets(recipe: Recipe, dataset: Dataset, indices: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, Any]:
    samples = [dataset[int(i)] for i in indices]
    images, transforms = preprocess([s.image for s in samples], spec)
    if recipe.task in ("detection", "instance_segmentation"):  # boxes (and masks) in network-input pixels
        targets = []
        for s, t in zip(samples, transforms):
            boxes = t.to_network(np.asarray([i.box for i in s.instances], dtype=np.float32))
            target = {"boxes": torch.from_numpy(boxes),
                      "labels": torch.as_tensor([_label_index(dataset, recipe, i.label) for i in s.instances], dtype=torch.long)}
            if recipe.task == "instance_segmentation":
                target["masks"] = torch.from_numpy(_network_masks(dataset, s, t, spec.size))
            targets.append(target)
        return images, targets
    if recipe.task == "classification":
        labels = [s.label for s in samples]
        if any(lab is None for lab in labels):
            raise DataError(f"{dataset.name}: training a classifier needs a class label for every image")
        return images, np.asarray(labels, dtype=np.int64)
    h, w = spec.size
    target = np.full((len(samples), h, w), IGNORE, dtype=np.int64)
    for k, (s, t) in enumerate(zip(samples, transforms)):
        if s.semantic is None:
            raise DataError(f"{dataset.name}: image {s.file_name} has no segmentation ground truth")
        x0, y0, x1, y1 = t.content
        target[k, y0:y1, x0:x1] = resize_nearest(s.semantic, y1 - y0, x1 - x0)
    return images, target


def _network_masks(dataset: Dataset, sample: Any, t: Any, size: tuple[int, int]) -> np.ndarray:
    """Instance masks [N,H,W] uint8 placed in the network input as the image is (resize / letterbox)."""
    h, w = size
    x0, y0, x1, y1 = t.content
    masks = np.zeros((len(sample.instances), h, w), dtype=np.uint8)
    for k, inst in enumerate(sample.instances):
        if inst.mask is None:
            raise DataError(f"{dataset.name}: image {sample.file_name} has an instance without a mask; "
                            "instance_segmentation training needs masks")
        masks[k, y0:y1, x0:x1] = resize_nearest(inst.mask.astype(np.uint8), y1 - y0, x1 - x0)
    return masks


def _label_index(dataset: Dataset, recipe: Recipe, category: int) -> int:
    """Dataset category -> model label index, by name."""
    name = dataset.categories[category]
    labels = list(recipe.model.labels or [])
    if name not in labels:
        raise DataError(f"{dataset.name}: category '{name}' is not in model.labels {labels}")
    return labels.index(name)


def _flip(x: torch.Tensor, y: Any, task: str, layout: str, width: int) -> tuple[torch.Tensor, Any]:
    """Horizontal flip of a batch and its targets."""
    x = x.flip(-1 if layout == "nchw" else -2)
    if task == "segmentation":
        return x, y.flip(-1)
    if task in ("detection", "instance_segmentation"):
        flipped = []
        for t in y:
            b = t["boxes"].clone()
            b[:, [0, 2]] = width - t["boxes"][:, [2, 0]]
            flipped.append({**t, "boxes": b, **({"masks": t["masks"].flip(-1)} if "masks" in t else {})})
        return x, flipped
    return x, y


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over classes, ignoring IGNORE pixels."""
    valid = (target != IGNORE).unsqueeze(1).to(logits.dtype)
    probs = logits.softmax(dim=1) * valid
    onehot = nn.functional.one_hot(target.clamp(max=logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2) * valid
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    denom = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    return 1 - ((2 * inter + 1) / (denom + 1)).mean()


class _Cached:
    """Generated datasets are rendered once, not once per epoch."""

    def __init__(self, dataset: Dataset) -> None:
        self.name, self.categories = dataset.name, dataset.categories
        self._items = [dataset[i] for i in range(len(dataset))]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Any:
        return self._items[index]


def _loss_function(recipe: Recipe, model: nn.Module, dataset: Dataset) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    """(pre-processed batch, targets) -> training loss, for the recipe's task and model."""
    if recipe.task != "classification" and type(model).__module__.startswith("ultralytics."):
        raise RecipeError(f"train: edgevision trains Ultralytics classifiers only; train this {recipe.task} model with "
                          "Ultralytics' own trainer (yolo train model=... data=...), then set model.source: ultralytics "
                          "and model.checkpoint: its best.pt")
    if recipe.task in ("detection", "instance_segmentation") and is_torchvision_detector(model):
        labels = list(recipe.model.labels or [])
        if background_is_class_zero(model) and labels and labels[0] in dataset.categories:
            raise RecipeError(f"model.labels: {type(model).__name__} learns class 0 as background, but model.labels[0] is "
                              f"the data category '{labels[0]}'; put 'background' first, e.g. [background, {', '.join(labels)}]")
        if recipe.task == "instance_segmentation" and getattr(getattr(model, "roi_heads", None), "mask_head", None) is None:
            raise RecipeError(f"task instance_segmentation: model.source '{recipe.model.source}' has no mask head")
        nchw = recipe.input.layout == "nchw"
        return lambda x, y: detection_loss(model, x if nchw else x.permute(0, 3, 1, 2), y)
    if recipe.task in ("detection", "instance_segmentation") and not (recipe.task == "detection" and hasattr(model, "loss")):
        raise RecipeError(f"model.source '{recipe.model.source}': {recipe.task} training supports edgevision's yolo and "
                          "torchvision's detectors (Faster / Mask R-CNN, RetinaNet, FCOS, SSD)")
    net = ExportWrapper(model, recipe.task, recipe.input.layout)
    if recipe.task == "detection":
        return lambda x, y: model.loss(net(x), y, recipe.input.size)
    ce = nn.CrossEntropyLoss(ignore_index=IGNORE)

    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = net(x)
        return ce(out, y) + (dice_loss(out, y) if recipe.task == "segmentation" else 0)

    return loss


def train(
    recipe: Recipe,
    log: Callable[[str], None] = print,
    progress: Optional[Callable[[int, int, float], None]] = None,
) -> Path:
    """Train and write recipe.model.checkpoint; return its path. `progress(step, total, loss)`."""
    if recipe.train is None or recipe.data.train is None:
        raise RecipeError("train: this recipe has no 'train' section (and data.train source)")
    if recipe.model.checkpoint is None:
        raise RecipeError("model.checkpoint: name the file the training writes, e.g. build/checkpoints/model.pt")
    if recipe.task not in ("classification", "segmentation", "detection", "instance_segmentation"):
        raise RecipeError(f"task '{recipe.task}': training is not supported yet (shapes has no keypoints)")
    cfg = recipe.train
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(cfg.seed)
    spec = recipe.input.spec()
    dataset = open_dataset(recipe.data.train, recipe.input.size)
    if recipe.data.train.source == "shapes":  # rendered once, not once per epoch
        dataset = _Cached(dataset)
    model = build_model(recipe.model, load_checkpoint=False)
    step_loss = _loss_function(recipe, model, dataset)
    steps_per_epoch = max(1, len(dataset) // cfg.batch)
    total = cfg.epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.15)
    log(f"training {recipe.model.source} on {dataset.name}: {cfg.epochs} epochs x {steps_per_epoch} steps, batch {cfg.batch}")
    start, step, recent, first = time.perf_counter(), 0, [], []
    model.train()
    for _epoch in range(cfg.epochs):
        order = rng.permutation(len(dataset))
        for b in range(steps_per_epoch):
            images, target = _targets(recipe, dataset, order[b * cfg.batch : (b + 1) * cfg.batch], spec)
            x = torch.from_numpy(images)
            y = target if isinstance(target, list) else torch.from_numpy(target)
            if recipe.task != "classification" and rng.random() < 0.5:  # flip images and targets together
                x, y = _flip(x, y, recipe.task, recipe.input.layout, recipe.input.size[1])
            loss = step_loss(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            recent = (recent + [loss.item()])[-20:]
            first = first if len(first) >= 20 else first + [loss.item()]
            if progress:
                progress(step, total, float(np.mean(recent)))
    model.eval()
    seconds = time.perf_counter() - start
    meta: dict[str, Any] = {"recipe": recipe.name, "epochs": cfg.epochs, "steps": total,
                            "initial_loss": float(np.mean(first)), "final_loss": float(np.mean(recent)),
                            "seconds": round(seconds, 1), "data": dataset.name}
    path = recipe.model.checkpoint
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({"model": model.state_dict(), "edgevision": meta}, tmp)
    os.replace(tmp, path)  # never a half-written checkpoint
    log(f"trained in {seconds:.0f} s (final loss {meta['final_loss']:.4f}); checkpoint written to {path}")
    return path
