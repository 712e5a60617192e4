"""torchvision detectors (RetinaNet, FCOS) on an ECA-ResNet backbone, exported as raw head outputs.

torchvision's detection models take a list of images and return boxes after anchor decoding and NMS:
data-dependent shapes, and ops (torchvision::nms, RoI resizing) that TensorRT engines should not carry.
The usual deployment form stops before that: the network computes, for every anchor (RetinaNet) or every
location (FCOS) of every FPN level, the raw class logits and box regression, concatenated over the levels
into fixed-shape tensors; the host decodes them (`anchor_boxes` gives the anchors, in input pixels).

    model = eca_retinanet(num_classes=80, backbone="eca_resnet50")   # RetinaNet, ECA-ResNet-50 + FPN P3-P7
    raw = RawDetector(model)                                          # forward(x) -> (cls_logits, bbox_regression)
    eca_deploy.export(raw, 320, "retinanet.onnx")

`RawDetector` takes already normalised [N, 3, H, W] images (ImageNet mean/std, as torchvision's transform
would apply; no resizing), and names its outputs (`output_names`, `output_kinds`), so every eca-deploy
command judges each of them as a tensor. The backbone is a zoo ECA-ResNet (eca_deploy.models) wrapped by
torchvision's `BackboneWithFPN`: its ECA blocks export as the usual ECA pattern and `eca-deploy fuse` fuses
them. torchvision is optional: it is imported when a function here is called, with a one-line error if absent.

From the command line, a file factory works as for any model file: write `net.py` with
`def build(num_classes=80): return RawDetector(eca_retinanet(num_classes))` and pass `--model net.py:build`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from eca_deploy.errors import EcaDeployError, first_line
from eca_deploy.models.registry import create_model

BACKBONES = ("eca_resnet18", "eca_resnet34", "eca_resnet50", "eca_resnet101", "eca_resnet152")
HEAD_OUTPUTS = {
    "retinanet": ("cls_logits", "bbox_regression"),
    "fcos": ("cls_logits", "bbox_regression", "bbox_ctrness"),
}
INSTALL_HINT = "pip install the torchvision released with your torch, from the same index as torch"


def import_torchvision() -> Any:
    """torchvision, or a one-line EcaDeployError saying what to install."""
    try:
        import torchvision
        import torchvision.models.detection
    except ImportError:
        raise EcaDeployError(
            f"torchvision detection models need torchvision, which is not installed: {INSTALL_HINT}"
        ) from None
    except RuntimeError as exc:  # built for another torch: "operator torchvision::nms does not exist"
        raise EcaDeployError(
            f"torchvision does not work with torch {torch.__version__} ({first_line(exc, 120)}): {INSTALL_HINT}"
        ) from None
    return torchvision


def eca_fpn_backbone(backbone: str = "eca_resnet50", fpn_channels: int = 256, extra: str = "p6p7") -> nn.Module:
    """A zoo ECA-ResNet (seeded) with torchvision's FPN over layer2..layer4 (C3-C5) and extra levels.

    `extra`: "p6p7" (RetinaNet, FCOS: P6 and P7 from P5) or "pool" (a max-pooled P6, as Faster R-CNN).
    """
    import_torchvision()
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

    if backbone not in BACKBONES:
        raise EcaDeployError(f"unknown detection backbone {backbone!r}: choose one of {', '.join(BACKBONES)}")
    if extra not in ("p6p7", "pool"):
        raise EcaDeployError(f"unknown extra FPN levels {extra!r}: choose p6p7 or pool")
    body = create_model(backbone, num_classes=1000)
    width = body.fc.in_features  # 512 (basic blocks) or 2048 (bottlenecks)
    in_channels = [width // 4, width // 2, width]
    blocks = LastLevelP6P7(fpn_channels, fpn_channels) if extra == "p6p7" else LastLevelMaxPool()
    return BackboneWithFPN(
        body, {"layer2": "0", "layer3": "1", "layer4": "2"}, in_channels, fpn_channels, extra_blocks=blocks
    )


def eca_retinanet(num_classes: int = 91, backbone: str = "eca_resnet50", fpn_channels: int = 256) -> nn.Module:
    """torchvision RetinaNet (9 anchors per location, P3-P7) on an ECA-ResNet + FPN, seeded, in eval mode."""
    import_torchvision()
    from torchvision.models.detection import RetinaNet

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return RetinaNet(eca_fpn_backbone(backbone, fpn_channels), num_classes=num_classes).eval()


def eca_fcos(num_classes: int = 91, backbone: str = "eca_resnet50", fpn_channels: int = 256) -> nn.Module:
    """torchvision FCOS (one location per cell, P3-P7) on an ECA-ResNet + FPN, seeded, in eval mode."""
    import_torchvision()
    from torchvision.models.detection import FCOS

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return FCOS(eca_fpn_backbone(backbone, fpn_channels), num_classes=num_classes).eval()


def _head_kind(model: nn.Module) -> str:
    import_torchvision()
    from torchvision.models.detection import FCOS, RetinaNet

    if isinstance(model, FCOS):
        return "fcos"
    if isinstance(model, RetinaNet):
        return "retinanet"
    raise EcaDeployError(f"RawDetector wraps a torchvision RetinaNet or FCOS, not {type(model).__name__}")


class RawDetector(nn.Module):
    """A torchvision RetinaNet/FCOS cut before anchor decoding and NMS: normalised images in, head tensors out.

    Outputs ([N, L, ...], L = every anchor of every FPN level, level by level, as torchvision orders them):
    `cls_logits` [N, L, num_classes], `bbox_regression` [N, L, 4] (RetinaNet: (dx, dy, dw, dh) against
    `anchor_boxes`, torchvision's BoxCoder with weights 1; FCOS: left/top/right/bottom distances from the
    anchor's centre in units of its size, after ReLU), and for FCOS `bbox_ctrness` [N, L, 1] (a logit).
    """

    output_kinds: dict[str, str]

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.kind = _head_kind(detector)
        self.backbone = detector.backbone
        self.head = detector.head
        self.anchor_generator = detector.anchor_generator
        self.output_names = HEAD_OUTPUTS[self.kind]
        self.output_kinds = dict.fromkeys(self.output_names, "tensor")
        transform = detector.transform
        self.pretrained_cfg = {
            "mean": tuple(transform.image_mean),
            "std": tuple(transform.image_std),
            "crop_pct": 1.0,
            "interpolation": "bilinear",
        }
        self.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = list(self.backbone(x).values())
        out = self.head(features)
        # torchvision reshapes with computed sizes; fixed sizes give the ONNX static shapes (batch aside)
        return tuple(
            out[name].reshape(-1, int(out[name].shape[1]), int(out[name].shape[2])) for name in self.output_names
        )


def anchor_boxes(raw: RawDetector, height: int, width: int | None = None) -> torch.Tensor:
    """[L, 4] anchors (x1, y1, x2, y2, input pixels) matching the rows of `bbox_regression` at this input size."""
    import_torchvision()
    from torchvision.models.detection.image_list import ImageList

    width = width or height
    images = torch.zeros(1, 3, height, width)
    with torch.no_grad():
        features = list(raw.backbone(images).values())
        return raw.anchor_generator(ImageList(images, [(height, width)]), features)[0]


def raw_detector(
    kind: str = "retinanet", num_classes: int = 91, backbone: str = "eca_resnet50", fpn_channels: int = 256
) -> RawDetector:
    """`RawDetector` of a new RetinaNet ("retinanet") or FCOS ("fcos") on an ECA-ResNet + FPN."""
    builders = {"retinanet": eca_retinanet, "fcos": eca_fcos}
    if kind not in builders:
        raise EcaDeployError(f"unknown torchvision detector {kind!r}: choose one of {', '.join(builders)}")
    return RawDetector(builders[kind](num_classes, backbone, fpn_channels))


def head_shapes(raw: RawDetector, height: int, width: int | None = None) -> dict[str, Sequence[int]]:
    """The output shapes (batch 1) at an input size (runs the backbone once, on zeros, for the anchors)."""
    anchors = anchor_boxes(raw, height, width)
    num_classes = raw.head.classification_head.num_classes
    dims = {"cls_logits": num_classes, "bbox_regression": 4, "bbox_ctrness": 1}
    return {name: (1, len(anchors), dims[name]) for name in raw.output_names}
