"""SegNet (Badrinarayanan et al., 2015): the decoder upsamples with the encoder's max-pooling indices.

Exported with the dynamo exporter, MaxUnpool becomes ScatterND (standard ONNX), which ONNX Runtime,
OpenVINO and TensorRT all run; the legacy TorchScript exporter cannot export max_unpool2d.

Max-unpooling is numerically fragile by nature: on flat image regions the pooled activations tie
exactly in PyTorch, and a backend that computes them in another order (OpenVINO's CPU kernels do)
breaks the ties at other positions. Measured on the shapes images: ONNX Runtime matches to 7e-6,
OpenVINO FP32 agrees on 99.9% of pixels with logits up to 0.35 apart. Recipes for SegNet should
set verify.tolerances accordingly; the verification reports the real figures either way.
"""

from __future__ import annotations

import torch
from torch import nn

from edgevision.models.unet import conv_block


class SegNet(nn.Module):
    """x [B,3,H,W] -> logits [B,num_classes,H,W]; H and W must be divisible by 2**depth."""

    def __init__(self, num_classes: int, width: int = 16, depth: int = 3, in_channels: int = 3) -> None:
        super().__init__()
        chans = [in_channels] + [width * 2**i for i in range(depth)]
        self.enc = nn.ModuleList(conv_block(chans[i], chans[i + 1]) for i in range(depth))
        self.dec = nn.ModuleList(conv_block(chans[i + 1], max(chans[i], width)) for i in reversed(range(depth)))
        self.pool = nn.MaxPool2d(2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2)
        self.head = nn.Conv2d(width, num_classes, 1)
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        indices = []
        for block in self.enc:
            x, idx = self.pool(block(x))
            indices.append(idx)
        for block in self.dec:
            x = block(self.unpool(x, indices.pop()))
        return self.head(x)


def segnet(num_classes: int, width: int = 16, depth: int = 3) -> SegNet:
    return SegNet(num_classes=num_classes, width=width, depth=depth)
