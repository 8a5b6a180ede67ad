"""A CIFAR ResNet-18 (3x3 stride-1 stem, no max-pool, stages of 64/128/256/512 channels, global average pooling)
whose parameter names match OpenOOD's ``ResNet18_32x32`` checkpoints (``conv1``, ``bn1``, ``layerN.i.{conv1, bn1,
conv2, bn2, shortcut.0, shortcut.1}``, ``fc``), so those state dicts load strictly.

Input: (B, 3, 32, 32) normalised with the CIFAR statistics. Output: logits (B, K).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Block(nn.Module):
    """Two 3x3 conv-BN layers with a residual; a 1x1 conv-BN projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        proj = stride != 1 or cin != cout
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) if proj \
            else nn.Sequential()

    def forward(self, x: Tensor) -> Tensor:
        h = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(h + self.shortcut(x))


class CifarResNet18(nn.Module):
    """ResNet-18 for 32x32 images ([2, 2, 2, 2] blocks); ``layer4`` (512 x 4 x 4) is the Grad-CAM layer."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        widths, cin = (64, 128, 256, 512), 64
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(Block(cin, w, stride), Block(w, w, 1)))
            cin = w
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) normalised -> (B, 512) penultimate features."""
        h = F.relu(self.bn1(self.conv1(x)))
        for i in range(1, 5):
            h = getattr(self, f"layer{i}")(h)
        return torch.flatten(self.avgpool(h), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))
