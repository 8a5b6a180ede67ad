"""A small ResNet-18-style classifier for small images (28x28 fmnist6; any side from 8 up), built from torchvision's
``BasicBlock``.

torchvision's ``ResNet`` hard-codes 64..512 channels and an ImageNet stem (7x7 stride 2 + max-pool) that would
shrink a 28x28 image to 7x7 before the first block, so we keep its residual block and assemble a CIFAR-style
network: 3x3 stride-1 stem, four stages of two blocks with widths ``width * (1, 2, 4, 8)``, global average pooling.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock


def _stage(in_ch: int, out_ch: int, blocks: int, stride: int) -> nn.Sequential:
    down = None
    if stride != 1 or in_ch != out_ch:
        down = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
    layers = [BasicBlock(in_ch, out_ch, stride, down)]
    layers += [BasicBlock(out_ch, out_ch) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class SmallResNet(nn.Module):
    """ResNet-18 layout ([2, 2, 2, 2] basic blocks) at a chosen width.

    Input: (B, in_channels, H, W), already normalised by the caller's adapter. Output: logits (B, num_classes).
    ``features(x)`` gives the penultimate (B, 8 * width) vector; ``layer4`` is the natural Grad-CAM layer.
    """

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 16, blocks: tuple[int, ...] = (2, 2, 2, 2)):
        super().__init__()
        self.config = {"num_classes": num_classes, "in_channels": in_channels, "width": width, "blocks": list(blocks)}
        w = [width * 2**i for i in range(len(blocks))]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w[0], 3, 1, 1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU())
        stages = [_stage(w[0], w[0], blocks[0], 1)]
        stages += [_stage(w[i - 1], w[i], blocks[i], 2) for i in range(1, len(blocks))]
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w[-1], num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Last convolutional feature map (B, 8 * width, H/8, W/8 rounded up)."""
        return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, 8 * width)."""
        return self.pool(self.feature_map(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))
