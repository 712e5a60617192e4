"""ECA-Det: a small single-stage detector with an ECA-ResNet trunk (a model file to copy and adapt).

ECA-Net (Wang et al., CVPR 2020) used ECA-ResNets as detection backbones; this file is the smallest version of
that shape a camera pipeline can deploy: a stem of two stride-2 conv-bn-relu layers, three stages of ECA
residual blocks (`eca_deploy.models.eca_resnet.ECABasicBlock`, the ECA gate after the block's last BatchNorm),
and a shared 3x3 conv with two 1x1 heads on the stride-16 feature map. The network returns the raw,
fixed-shape tensors a TensorRT engine should compute, one row per anchor as torchvision's RetinaNet head
lays them out; anchors, score threshold and NMS belong to the host code (`decode` below, plain numpy, from
`eca_deploy.detection`, whose layout "eca_detector" is this head: `check --layout eca_detector` judges it
by its detections):

    cls: [N, L, num_classes]  logits, one sigmoid per anchor and class (RetinaNet style)
    box: [N, L, 4]            (dx, dy, dw, dh) per anchor, the SSD/Faster R-CNN encoding

with L = (H / 16) (W / 16) A rows ordered (i, j, a): row (i W' + j) A + a is anchor a of cell (i, j) of the
W'-wide map, the square of side `anchor_sizes[a]` pixels centred on ((j + 0.5) 16, (i + 0.5) 16). Classes
last, as a classifier's logits: the class count is the last dimension of the first output.

With eca-deploy: `eca-deploy export --model examples/eca_detector.py:eca_detector --output det.onnx`
(the factory is called with `num_classes` when `--num-classes` is given). The class attributes
`output_names` and `output_kinds` name the ONNX outputs and tell every command to judge both outputs as
tensors (cosine, max abs and relative error), not as classification logits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from eca_deploy.detection import DecodeOptions, Detections, box_iou, nms, select
from eca_deploy.detection.decoders import delta_boxes, example_anchors, sigmoid
from eca_deploy.models.eca import ECALayer, adaptive_kernel_size
from eca_deploy.models.eca_resnet import ECABasicBlock, conv1x1

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def conv_bn_relu(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def eca_stage(cin: int, cout: int, depth: int, stride: int) -> nn.Sequential:
    """`depth` ECA basic blocks, the first one strided (projection shortcut), k chosen from the width (Eq. 12)."""
    k = adaptive_kernel_size(cout)
    shortcut = nn.Sequential(conv1x1(cin, cout, stride), nn.BatchNorm2d(cout)) if stride != 1 or cin != cout else None
    blocks = [ECABasicBlock(cin, cout, stride, shortcut, k)]
    blocks += [ECABasicBlock(cout, cout, 1, None, k) for _ in range(depth - 1)]
    return nn.Sequential(*blocks)


class ECADetector(nn.Module):
    """Stem (/4), ECA stages (/4, /8, /16), an ECA-gated head conv and the `cls` and `box` 1x1 predictors."""

    output_names: ClassVar[tuple[str, ...]] = ("cls", "box")
    output_kinds: ClassVar[dict[str, str]] = {"cls": "tensor", "box": "tensor"}
    stride: ClassVar[int] = 16

    def __init__(
        self,
        num_classes: int = 80,
        widths: Sequence[int] = (32, 64, 128),
        depths: Sequence[int] = (1, 1, 2),
        head_width: int = 128,
        anchor_sizes: Sequence[float] = (32.0, 64.0, 128.0),
        img_size: int = 320,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if len(widths) != 3 or len(depths) != 3:
            raise ValueError("widths and depths take one value per stage (3 stages)")
        if img_size % self.stride:
            raise ValueError(f"img_size must be a multiple of the stride {self.stride}, got {img_size}")
        self.num_classes = num_classes
        self.anchor_sizes = tuple(float(a) for a in anchor_sizes)
        self.num_anchors = len(self.anchor_sizes)
        self.stem = nn.Sequential(conv_bn_relu(3, widths[0] // 2, 2), conv_bn_relu(widths[0] // 2, widths[0], 2))
        self.stages = nn.Sequential(
            eca_stage(widths[0], widths[0], depths[0], 1),
            eca_stage(widths[0], widths[1], depths[1], 2),
            eca_stage(widths[1], widths[2], depths[2], 2),
        )
        self.head = conv_bn_relu(widths[2], head_width)
        self.head_eca = ECALayer(head_width, adaptive_kernel_size(head_width))
        self.cls = nn.Conv2d(head_width, self.num_anchors * num_classes, 1)
        self.box = nn.Conv2d(head_width, self.num_anchors * 4, 1)
        # timm's convention: the preprocessing eca-deploy exports with (no centre crop for a detector)
        self.pretrained_cfg = {"input_size": (3, img_size, img_size), "crop_pct": 1.0, "interpolation": "bilinear",
                               "mean": IMAGENET_MEAN, "std": IMAGENET_STD}  # fmt: skip
        self._init_weights(prior_prob)

    def _init_weights(self, prior_prob: float) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for head in (self.cls, self.box):
            nn.init.normal_(head.weight, std=0.01)
            nn.init.zeros_(head.bias)
        nn.init.constant_(self.cls.bias, -math.log((1 - prior_prob) / prior_prob))  # RetinaNet's prior

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.head_eca(self.head(self.stages(self.stem(x))))
        return self._rows(self.cls(features), self.num_classes), self._rows(self.box(features), 4)

    def _rows(self, m: torch.Tensor, width: int) -> torch.Tensor:
        """[N, A * width, H, W] -> [N, H * W * A, width] (cell by cell, anchor by anchor)."""
        rows = int(m.shape[2]) * int(m.shape[3]) * self.num_anchors  # a constant in ONNX: static output shapes
        return m.permute(0, 2, 3, 1).reshape(-1, rows, width)


def eca_detector(num_classes: int = 80, img_size: int = 320, **kwargs: object) -> ECADetector:
    """ECA-Det at 320x320, 80 classes, 3 anchors (32, 64, 128 px): `--model examples/eca_detector.py:eca_detector`."""
    return ECADetector(num_classes=num_classes, img_size=img_size, **kwargs)  # type: ignore[arg-type]


def anchors(height: int, width: int, stride: int, anchor_sizes: Sequence[float]) -> np.ndarray:
    """[H * W * A, 4] anchor boxes (cx, cy, w, h) in input pixels for an H x W map, in the rows' order."""
    return example_anchors(height * stride, width * stride, stride, anchor_sizes).astype(np.float32)


def decode(
    cls_rows: np.ndarray,
    box_rows: np.ndarray,
    image_size: int | tuple[int, int],
    anchor_sizes: Sequence[float] = (32.0, 64.0, 128.0),
    stride: int = ECADetector.stride,
    score_threshold: float = 0.3,
    iou_threshold: float = 0.5,
    top_k: int = 1000,
    max_detections: int = 100,
) -> Detections:
    """One image's outputs ([L, C] and [L, 4]) at input `image_size` (S or (H, W)) -> detections.

    Scores above `score_threshold`, the best `top_k` of them, per-class NMS at `iou_threshold`, best first.
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    priors = example_anchors(height, width, stride, anchor_sizes)
    if cls_rows.ndim != 2 or box_rows.shape != (len(cls_rows), 4):
        raise ValueError(f"decode takes one image's outputs ([L, C] and [L, 4]), got {cls_rows.shape} and "
                         f"{box_rows.shape}")  # fmt: skip
    if len(cls_rows) != len(priors):
        raise ValueError(f"{len(cls_rows)} rows do not fit {len(priors)} anchors of a {height}x{width} input")
    options = DecodeOptions(score_threshold, iou_threshold, top_k, max_detections, multi_label=True)
    return select(sigmoid(cls_rows), delta_boxes(box_rows, priors), options)


__all__ = ["Detections", "ECADetector", "anchors", "box_iou", "decode", "decode_outputs", "eca_detector", "nms"]


def decode_outputs(cls: np.ndarray, box: np.ndarray, image_size: tuple[int, int]) -> Detections:
    """`eca-deploy run --decoder examples/eca_detector.py:decode_outputs`: one frame's outputs, by name.

    Decodes with the default anchors, stride and thresholds; for others, write a function like this one.
    """
    return decode(cls, box, image_size)
