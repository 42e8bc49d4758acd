"""Random weights that measure something: for parity checks, benchmarks and `edgevision
random-checkpoint`, where pretrained weights cannot be had. What initialisation leaves dead is woken
(zero-initialised heads re-drawn, tiny layer scales raised: see wake_up), BatchNorm statistics are
re-estimated (models/batchnorm.py) and a random Ultralytics, RetinaNet or FCOS class head is spread,
so outputs are neither constant, nor ties, nor all at the prior. Speed and parity are real; accuracy
is meaningless."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn


def reestimated_checkpoint(recipe_data: dict, path: Path, images: int = 16,
                           log: Optional[Callable[[str], None]] = None) -> Path:
    """Save random weights for a recipe's model, with BatchNorm statistics re-estimated on
    generated shapes images pushed through the exported part of the model (the detection adapter
    for detectors). Used by the tests and the benchmarks, where pretrained weights cannot be had.
    `log` gets one line per change made beyond the re-estimation (wake_up, the class-head spread)."""
    from edgevision.data.shapes import ShapesDataset
    from edgevision.export.detection import detection_adapter
    from edgevision.export.onnx_export import ExportWrapper
    from edgevision.models.batchnorm import reestimate_batchnorm
    from edgevision.models.sources import build_model
    from edgevision.recipe import ExportSpec, InputSection, ModelSpec
    from edgevision.tasks import DETECTION_TASKS
    from edgevision.runtime.preprocess import preprocess
    from edgevision.runtime.proposals import proposal_batch

    torch.manual_seed(0)
    model = build_model(ModelSpec(**recipe_data["model"]), load_checkpoint=False)
    say = log or (lambda _line: None)
    for line in wake_up(model):
        say(line)
    spec = InputSection(**recipe_data["input"]).spec()  # recipe defaults filled in
    data = ShapesDataset(images, seed=7, size=tuple(spec.size))
    task = recipe_data["task"]
    if task in DETECTION_TASKS and hasattr(model, "roi_heads") and not _has_batchnorm(getattr(getattr(model, "roi_heads", None), "mask_head", None),
                                                      getattr(getattr(model, "roi_heads", None), "keypoint_head", None)):
        task = "detection"  # R-CNN mask / keypoint heads without BatchNorm: skip running them (slow on CPU)
    proposals = ExportSpec(**recipe_data.get("export", {})).proposals
    core = detection_adapter(model, spec.size, task, proposals) if task in DETECTION_TASKS else model
    wrapper = ExportWrapper(core, task, spec.layout)
    batches = [preprocess([data[k].image for k in range(i, min(i + 4, images))], spec) for i in range(0, images, 4)]
    if proposals is None:
        reestimate_batchnorm(wrapper, (torch.from_numpy(x) for x, _ in batches))
        pixels = torch.from_numpy(np.concatenate([x for x, _ in batches]))
        if hasattr(core, "head") and hasattr(core.head, "cv3"):  # Ultralytics
            spread_class_logits(core, pixels)
            say("class head: last convolutions rescaled so its logits on the shapes images are N(-4, 1.5^2) "
                "(random weights otherwise saturate every score at 1.0: ties)")
        elif hasattr(getattr(core, "head", None), "dec_score_head"):  # RT-DETR
            spread_query_logits(core, pixels)
            say("decoder class head: last layer rescaled so its logits on the shapes images are N(-4, 1.5^2) per "
                "class (random weights otherwise give every query one class at one score: ties)")
        elif hasattr(getattr(getattr(model, "head", None), "classification_head", None), "cls_logits"):  # RetinaNet, FCOS
            spread_prior_logits(model, pixels)
            say("class head: last convolution rescaled so some scores pass the model's threshold (random weights "
                "answer the prior, 0.01, everywhere)")
    else:  # the second stage on the runtime's default proposals
        reestimate_batchnorm(wrapper, batches, lambda b: wrapper(torch.from_numpy(b[0]), torch.from_numpy(
            proposal_batch(None, b[1], proposals.max, spec.size))))
    torch.save(model.state_dict(), path)
    return Path(path)


def wake_up(model: nn.Module, scale: float = 0.5, std: float = 0.02) -> list[str]:
    """What initialisation leaves dead for a comparison, woken in place; returns one line per change.
    Heads initialised to zero (torchvision's ViT, timm's Mixer and ResMLP) answer constant logits: their
    weights are re-drawn N(0, std^2). Layer scales initialised tiny (ConvNeXt 1e-6, ResMLP / CaiT 1e-4: a
    parameter whose every value is one nonzero constant of at most 1e-3) leave each block nearly the
    identity: they are set to `scale` (0.5: ConvNeXt's blocks then move its logits by about 20%; at 1.0
    ResMLP, which has no normalisation, grows its logits 100-fold)."""
    changes = []
    with torch.no_grad():
        for name, module in model.named_modules():
            weight = getattr(module, "weight", None)
            if isinstance(module, (nn.Linear, nn.Conv2d)) and weight is not None and weight.numel() and not weight.any():
                nn.init.normal_(weight, std=std)
                changes.append(f"{name}: zero-initialised {type(module).__name__} re-drawn N(0, {std}^2)")
        tiny = [(n, float(p.flatten()[0])) for n, p in model.named_parameters()
                if p.numel() > 1 and 0 < abs(float(p.flatten()[0])) <= 1e-3 and bool((p == p.flatten()[0]).all())]
        for name, _ in tiny:
            model.get_parameter(name).fill_(scale)
        if tiny:
            changes.append(f"{len(tiny)} layer scales (e.g. {tiny[0][0]} = {tiny[0][1]:g}) set to {scale}")
    return changes


def spread_class_logits(adapter: nn.Module, images: torch.Tensor, mean: float = -4.0, std: float = 1.5) -> None:
    """Rescale a random Ultralytics head's last class convolutions so that its logits on `images`
    have this mean and spread. Random weights otherwise saturate the sigmoid (thousands of scores of
    exactly 1.0: ties), or start every class at Ultralytics' prior (1e-4: nothing detected). With
    N(-4, 1.5^2), about 3% of (box, class) pairs pass a 0.25 threshold, like a trained detector.
    Both branches of a head that has two (YOLO26, YOLOv10: one-to-many and one-to-one)."""
    heads = [getattr(adapter.head, name, None) for name in ("cv3", "one2one_cv3")]
    with torch.no_grad():
        feats = adapter.features(images)
        for level, branch in ((f, b) for head in heads if head is not None for f, b in zip(feats, head)):
            last = branch[-1]
            logits = branch(level) - last.bias.view(1, -1, 1, 1)
            scale = std / float(logits.std().clamp(min=1e-6))
            last.weight.mul_(scale)
            last.bias.copy_(mean - scale * logits.mean(dim=(0, 2, 3)))


def spread_query_logits(adapter: nn.Module, images: torch.Tensor, mean: float = -4.0, std: float = 1.5) -> None:
    """RT-DETR: rescale the last decoder layer's class head (a Linear over the query embeddings) so
    that its logits on `images` are N(mean, std^2) for every class. Random weights give every query
    nearly the same embedding direction: one class wins everywhere at one score (0.62), 300 ties."""
    last = adapter.head.dec_score_head[-1]
    seen: list[torch.Tensor] = []
    hook = last.register_forward_hook(lambda _m, args, _out: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            adapter(images)
    finally:
        hook.remove()
    with torch.no_grad():
        logits = (seen[-1] @ last.weight.T).flatten(0, -2)  # [B*queries, C]
        centred = logits - logits.mean(dim=0)
        scale = std / float(centred.std().clamp(min=1e-6))
        last.weight.mul_(scale)
        last.bias.copy_(mean - scale * logits.mean(dim=0))


def spread_prior_logits(model: nn.Module, images: torch.Tensor, std: float = 1.5) -> None:
    """RetinaNet / FCOS: a random class head answers its prior everywhere (logit -4.6: every score
    0.010-0.011, nothing above RetinaNet's 0.05, so parity would compare nothing and timing would
    skip the NMS). Rescale its last convolution so that logits on `images` spread as N(t - 3 std,
    std^2), t the logit of the model's score threshold. The tail is heavier than a normal one: for
    RetinaNet at 320x320 on shapes images, 0.6% of (anchor, class) pairs pass, 150-250 detections
    per image after NMS."""
    head, threshold = model.head.classification_head, float(model.score_thresh)
    last = head.cls_logits
    with torch.no_grad():
        last.bias.zero_()
        raw = head(list(model.backbone(images).values()))
        scale = std / float(raw.std().clamp(min=1e-6))
        last.weight.mul_(scale)
        last.bias.fill_(float(np.log(threshold / (1 - threshold))) - 3 * std - scale * float(raw.mean()))


def _has_batchnorm(*modules: Optional[nn.Module]) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for module in modules if module is not None
               for m in module.modules())
