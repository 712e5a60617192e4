"""Efficient Channel Attention (ECA), Wang et al., CVPR 2020.

ECA replaces SE's two fully connected layers by one 1-D convolution across channels: global average
pooling gives one descriptor per channel, a convolution with odd kernel k mixes each channel with its
k-1 neighbours (no dimensionality reduction), and a sigmoid turns the result into a per-channel gate.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def adaptive_kernel_size(channels: int, gamma: float = 2.0, b: float = 1.0) -> int:
    """The paper's k = psi(C) = |log2(C)/gamma + b/gamma|_odd (Eq. 12), gamma=2, b=1.

    |t|_odd is the nearest odd number to t, taken as the official code does: t = int(|(log2 C + b) / gamma|),
    then t if t is odd else t + 1. Worked values for gamma=2, b=1:

        C:  16  32  64  128  256  512  1024  2048
        k:   3   3   3    5    5    5     5     7
    """
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECALayer(nn.Module):
    """ECA gate: x * sigmoid(conv1d_k(avg_pool(x))) with zero padding (k-1)/2 across channels.

    Attribute names (`avg_pool`, `conv`, `sigmoid`) follow the official implementation, so the
    parameter is `<block>.eca.conv.weight` with shape [1, 1, k].
    """

    def __init__(self, channels: int, k_size: int = 3) -> None:
        super().__init__()
        if k_size < 1 or k_size % 2 == 0:
            raise ValueError(f"ECA kernel size must be odd and >= 1, got {k_size}")
        self.channels = channels
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    @property
    def k_size(self) -> int:
        return int(self.conv.kernel_size[0])

    def set_k_size(self, k_size: int) -> None:
        """Replace the convolution by one of kernel size `k_size` (used when a checkpoint says so)."""
        if k_size != self.k_size:
            self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.avg_pool(x)  # [N, C, 1, 1]
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)  # conv across C
        y = self.sigmoid(y)
        return x * y.expand_as(x)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, k_size={self.k_size}"


def eca_layers(model: nn.Module) -> list[tuple[str, ECALayer]]:
    """All ECA layers of `model` in forward order, with their qualified names."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, ECALayer)]


def eca_gates(model: nn.Module) -> list[tuple[str, int]]:
    """Every ECA-style gate in forward order, with its kernel size: the zoo's ECALayer, timm's EcaModule and
    CecaModule, and any other module holding a Conv1d with one input and one output channel (the conv across
    channels). Used to describe foreign networks; the zoo uses `eca_layers`."""
    gates = []
    for name, module in model.named_modules():
        convs = [c for c in module.children() if isinstance(c, nn.Conv1d) and c.in_channels == c.out_channels == 1]
        if convs:
            gates.append((name, int(convs[0].kernel_size[0])))
    return gates
