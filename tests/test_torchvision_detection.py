"""torchvision RetinaNet/FCOS on an ECA-ResNet + FPN, as raw head outputs: ONNX export, ONNX Runtime, ECA fusion."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest
import torch

from eca_deploy.errors import EcaDeployError
from eca_deploy.models.eca import eca_layers

pytest.importorskip("torchvision.models.detection")

SIZE = 64
CLASSES = 5


def _raw(kind: str, fpn_channels: int = 32):
    from eca_deploy.models.torchvision_detection import raw_detector

    return raw_detector(kind, num_classes=CLASSES, backbone="eca_resnet18", fpn_channels=fpn_channels)


@pytest.fixture(scope="module")
def retinanet():
    return _raw("retinanet")


@pytest.fixture(scope="module")
def exported(retinanet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from eca_deploy.data.images import Preprocessing
    from eca_deploy.exporters import ExportOptions, export_onnx
    from eca_deploy.onnx_io import save_onnx

    path = tmp_path_factory.mktemp("retinanet") / "retinanet.onnx"
    prep = Preprocessing.for_size(SIZE, crop_pct=1.0)
    with torch.no_grad():
        model = export_onnx(retinanet, "eca_retinanet", ExportOptions(img_size=SIZE, preprocessing=prep))
    return save_onnx(model, path)


def _ort_outputs(path: Path, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def test_raw_outputs_match_torchvision_head_and_anchors(retinanet) -> None:
    from eca_deploy.models.torchvision_detection import anchor_boxes, head_shapes

    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        cls_logits, bbox_regression = retinanet(x)
    anchors = anchor_boxes(retinanet, SIZE)
    per_level = [(SIZE // s) ** 2 or 1 for s in (8, 16, 32)] + [1, 1]  # P3-P5, then P6 and P7 of 1x1 at 64 px
    assert anchors.shape == (9 * sum(per_level), 4)
    assert cls_logits.shape == (2, len(anchors), CLASSES) and bbox_regression.shape == (2, len(anchors), 4)
    assert head_shapes(retinanet, SIZE) == {"cls_logits": (1, len(anchors), CLASSES),
                                            "bbox_regression": (1, len(anchors), 4)}  # fmt: skip
    assert retinanet.output_kinds == {"cls_logits": "tensor", "bbox_regression": "tensor"}
    assert len(eca_layers(retinanet)) == 8  # ECA-ResNet-18: 2 blocks in each of 4 stages


def test_fcos_has_three_outputs() -> None:
    fcos = _raw("fcos", 64)  # FCOS's GroupNorm(32) needs 2 channels a group at P7's 1x1
    with torch.no_grad():
        outs = fcos(torch.randn(1, 3, SIZE, SIZE))
    assert fcos.output_names == ("cls_logits", "bbox_regression", "bbox_ctrness")
    assert [tuple(o.shape[2:]) for o in outs] == [(CLASSES,), (4,), (1,)]
    assert len({o.shape[1] for o in outs}) == 1


def test_every_output_of_the_onnx_matches_pytorch(retinanet, exported: Path) -> None:
    import onnx

    x = torch.randn(3, 3, SIZE, SIZE)  # a batch other than the export's example: the batch is dynamic
    with torch.no_grad():
        expected = retinanet(x)
    outputs = _ort_outputs(exported, x.numpy())
    assert len(outputs) == len(expected) == 2
    for ref, out in zip(expected, outputs, strict=True):
        assert out.shape == tuple(ref.shape)
        np.testing.assert_allclose(out, ref.numpy(), rtol=1e-4, atol=1e-4)
    ops = {n.op_type for n in onnx.load(str(exported)).graph.node}
    assert not ops & {"NonMaxSuppression", "TopK", "RoiAlign"}  # cut before decoding and NMS


def test_onnx_outputs_are_named(exported: Path) -> None:
    import onnx

    assert [o.name for o in onnx.load(str(exported)).graph.output] == ["cls_logits", "bbox_regression"]


def test_eca_blocks_fuse(exported: Path, tmp_path: Path) -> None:
    import onnx

    from eca_deploy.pipeline.fuse import run_fuse

    fused = tmp_path / "retinanet.fused.onnx"
    result = run_fuse(exported, fused)  # verified against the unfused model on the sample photographs
    assert result.report.count == 8 and result.check is not None and result.check.passed
    assert sum(n.op_type == "ECA" for n in onnx.load(str(fused)).graph.node) == 8
    x = np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    for ref, out in zip(_ort_outputs(exported, x), _ort_outputs(fused, x), strict=True):
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_bad_arguments_and_missing_torchvision(monkeypatch: pytest.MonkeyPatch) -> None:
    from eca_deploy.models import torchvision_detection as tvd

    with pytest.raises(EcaDeployError, match="unknown detection backbone"):
        tvd.eca_fpn_backbone("resnet50")
    with pytest.raises(EcaDeployError, match="unknown torchvision detector"):
        tvd.raw_detector("yolo")
    with pytest.raises(EcaDeployError, match="RetinaNet or FCOS"):
        tvd.RawDetector(torch.nn.Conv2d(3, 3, 1))
    real_import = builtins.__import__

    def no_torchvision(name: str, *args, **kwargs):
        if name.startswith("torchvision"):
            raise ImportError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchvision)
    with pytest.raises(EcaDeployError, match="need torchvision, which is not installed") as info:
        tvd.eca_retinanet()
    assert "\n" not in str(info.value)
