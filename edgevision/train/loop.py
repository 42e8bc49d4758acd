"""A minimal, honest training loop (CPU is fine) for the recipe's model on its data.train source.

Images go through the runtime's own numpy pre-processing, so the model is trained on exactly
what it will see when deployed. Augmentation: horizontal flips. AdamW + cosine schedule.
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
from edgevision.runtime.preprocess import InputSpec, plan, preprocess, resize_nearest

IGNORE = 255  # letterbox padding in segmentation targets


def _targets(recipe: Recipe, dataset: Dataset, indices: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, np.ndarray]:
    samples = [dataset[int(i)] for i in indices]
    images, transforms = preprocess([s.image for s in samples], spec)
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
    if recipe.task not in ("classification", "segmentation"):
        raise RecipeError(f"task '{recipe.task}': training is not supported yet")
    cfg = recipe.train
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(cfg.seed)
    spec = InputSpec.from_dict(recipe.input.model_dump())
    dataset = open_dataset(recipe.data.train, recipe.input.size)
    model = build_model(recipe.model, load_checkpoint=False)
    net = ExportWrapper(model, recipe.task, recipe.input.layout)
    steps_per_epoch = max(1, len(dataset) // cfg.batch)
    total = cfg.epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.15)
    loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE)
    log(f"training {recipe.model.source} on {dataset.name}: {cfg.epochs} epochs x {steps_per_epoch} steps, batch {cfg.batch}")
    start, step, recent = time.perf_counter(), 0, []
    model.train()
    for _epoch in range(cfg.epochs):
        order = rng.permutation(len(dataset))
        for b in range(steps_per_epoch):
            images, target = _targets(recipe, dataset, order[b * cfg.batch : (b + 1) * cfg.batch], spec)
            x, y = torch.from_numpy(images), torch.from_numpy(target)
            if recipe.task == "segmentation" and rng.random() < 0.5:  # flip image and mask together
                x, y = x.flip(-1 if recipe.input.layout == "nchw" else -2), y.flip(-1)
            loss = loss_fn(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            recent = (recent + [float(loss)])[-20:]
            if progress:
                progress(step, total, float(np.mean(recent)))
    model.eval()
    seconds = time.perf_counter() - start
    meta: dict[str, Any] = {"recipe": recipe.name, "epochs": cfg.epochs, "steps": total, "final_loss": float(np.mean(recent)),
                            "seconds": round(seconds, 1), "data": dataset.name}
    path = recipe.model.checkpoint
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({"model": model.state_dict(), "edgevision": meta}, tmp)
    os.replace(tmp, path)  # never a half-written checkpoint
    log(f"trained in {seconds:.0f} s (final loss {meta['final_loss']:.4f}); checkpoint written to {path}")
    return path
