"""ECA-ResNet-18/34/50/101/152: ResNet (He et al., 2016) with an ECA gate in every residual block.

The gate sits after the block's last BatchNorm and before the residual addition (paper, Fig. 2 and the
official code). Layer names match the official checkpoints (`layer1.0.eca.conv.weight`, ...).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from eca_deploy.models.eca import ECALayer


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class ECABasicBlock(nn.Module):
    """Two 3x3 convolutions, then ECA, then the residual addition."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, k_size: int = 3
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.eca = ECALayer(planes, k_size)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.eca(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class ECABottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), then ECA, then the residual addition."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, k_size: int = 3
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.eca = ECALayer(planes * self.expansion, k_size)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.eca(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


class ECAResNet(nn.Module):
    """ResNet stem, four stages of ECA blocks (one k per stage), global average pooling and `fc`."""

    def __init__(
        self,
        block: type[ECABasicBlock | ECABottleneck],
        layers: Sequence[int],
        num_classes: int = 1000,
        k_size: Sequence[int] = (3, 3, 3, 3),
    ) -> None:
        super().__init__()
        if len(k_size) != 4:
            raise ValueError(f"k_size needs one kernel size per stage (4 values), got {tuple(k_size)}")
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], k_size[0])
        self.layer2 = self._make_layer(block, 128, layers[1], k_size[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], k_size[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], k_size[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(
        self, block: type[ECABasicBlock | ECABottleneck], planes: int, blocks: int, k_size: int, stride: int = 1
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, k_size)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, k_size=k_size) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.avgpool(x)
        return self.fc(x.view(x.size(0), -1))


def eca_resnet18(num_classes: int = 1000, k_size: Sequence[int] = (3, 5, 7, 7)) -> ECAResNet:
    return ECAResNet(ECABasicBlock, [2, 2, 2, 2], num_classes, k_size)


def eca_resnet34(num_classes: int = 1000, k_size: Sequence[int] = (3, 3, 5, 7)) -> ECAResNet:
    return ECAResNet(ECABasicBlock, [3, 4, 6, 3], num_classes, k_size)


def eca_resnet50(num_classes: int = 1000, k_size: Sequence[int] = (3, 5, 5, 7)) -> ECAResNet:
    return ECAResNet(ECABottleneck, [3, 4, 6, 3], num_classes, k_size)


def eca_resnet101(num_classes: int = 1000, k_size: Sequence[int] = (3, 3, 5, 7)) -> ECAResNet:
    return ECAResNet(ECABottleneck, [3, 4, 23, 3], num_classes, k_size)


def eca_resnet152(num_classes: int = 1000, k_size: Sequence[int] = (3, 3, 5, 7)) -> ECAResNet:
    return ECAResNet(ECABottleneck, [3, 8, 36, 3], num_classes, k_size)
