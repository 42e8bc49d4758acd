"""U-Net (Ronneberger et al., 2015): encoder/decoder with skip connections, small and CPU-trainable."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 conv + BN + ReLU, the U-Net stage."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """x [B,3,H,W] -> logits [B,num_classes,H,W]. Any H, W (decoder upsamples to each skip's size)."""

    def __init__(self, num_classes: int, width: int = 16, depth: int = 4, in_channels: int = 3) -> None:
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError("UNet: width and depth must be >= 1")
        chans = [width * 2**i for i in range(depth + 1)]
        self.stem = conv_block(in_channels, chans[0])
        self.down = nn.ModuleList(conv_block(chans[i], chans[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(conv_block(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(chans[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for block in self.up:
            skip = skips.pop()
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, skip], dim=1))
        return self.head(y)


def unet(num_classes: int, width: int = 16, depth: int = 4) -> UNet:
    return UNet(num_classes=num_classes, width=width, depth=depth)
