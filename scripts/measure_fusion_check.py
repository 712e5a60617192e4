"""How `fuse` judges a fusion on timm ECA models: the numbers in docs/precision.md (Fusion verification).

    python scripts/measure_fusion_check.py eca_botnext26ts_256:256 ecaresnet200d:128 eca_nfnet_l3:128

For each timm model (random weights, seed 0, with unit BatchNorm weights and BatchNorm statistics from the
sample photographs, so the logits and their float32 error have a realistic scale; timm's zero-initialised
residual branches would make the network the identity) exported with eca-deploy's exporter: the former rule
(max abs difference on 4 photos against 1e-5), the current check on the 12 photos (difference relative to the
largest logit, the unfused model's float32 noise, the bound, the verdict), each model's error against a float64
PyTorch evaluation, and the check of a wrong fusion (the first ECA kernel reversed). Needs timm.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def lively_timm(name: str, size: int) -> tuple[object, object]:
    import timm
    import torch

    from eca_deploy.data.images import Preprocessing, load_images
    from eca_deploy.models.registry import recalibrate_batchnorm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    cfg = model.pretrained_cfg
    prep = Preprocessing.for_size(size, mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.weight is not None:
                module.weight.fill_(1.0)
        for param in model.parameters():  # zero-initialised scalar gains (NFNets' skip-init)
            if param.ndim == 0 and float(param) == 0.0:
                param.fill_(1.0)
    recalibrate_batchnorm(model, load_images(None, prep).array)
    return model, prep


def measure(name: str, size: int) -> dict[str, object]:
    import onnx
    import torch

    from eca_deploy.data.images import load_images
    from eca_deploy.exporters import ExportOptions, export_onnx
    from eca_deploy.fusion import fuse_eca
    from eca_deploy.pipeline.fuse import _outputs, check_fusion
    from tests.test_fusion_verify import reverse_eca_kernels

    model, prep = lively_timm(name, size)
    with torch.no_grad():
        unfused = export_onnx(model, f"timm:{name}", ExportOptions(img_size=size, preprocessing=prep))
    fused = onnx.ModelProto()
    fused.CopyFrom(unfused)
    blocks = fuse_eca(fused).count
    photos = load_images(None, prep).array
    u, f = _outputs(unfused, photos), _outputs(fused, photos)
    old = float(np.abs(u[:4] - f[:4]).max())
    check = check_fusion(unfused, fused, photos)
    with torch.no_grad():
        ref = model.double()(torch.from_numpy(photos).double()).numpy()
    scale = np.maximum(1.0, np.abs(u).max(axis=1))

    def rel(a: np.ndarray) -> float:
        return float((np.abs(a - ref).max(axis=1) / scale).max())

    reverse_eca_kernels(fused, 1)
    wrong = check_fusion(unfused, fused, photos)
    return {
        "model": f"{name} @ {size}", "blocks": blocks, "logit_max": float(np.abs(u).max()), "old_abs": old,
        "old_verdict": "refused" if old > 1e-5 else "passed", "relative": check.relative_diff,
        "noise": check.float32_noise, "bound": check.bound, "verdict": "passed" if check.passed else "refused",
        "unfused_f64": rel(u), "fused_f64": rel(f), "wrong_relative": wrong.relative_diff,
        "wrong_verdict": "passed" if wrong.passed else "refused",
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="timm model name and input size, NAME:SIZE")
    args = parser.parse_args()
    print(
        "| model | ECA blocks | largest logit | former rule: max abs, 4 photos | relative difference, 12 photos "
        "| unfused float32 noise | bound | verdict | unfused / fused vs float64 | first kernel reversed |"
    )
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | --- | --- | --- |")
    for spec in args.models:
        name, _, size = spec.partition(":")
        r = measure(name, int(size or 224))
        print(f"| {r['model']} | {r['blocks']} | {r['logit_max']:.3g} | {r['old_abs']:.2g} ({r['old_verdict']}) | "
              f"{r['relative']:.2g} | {r['noise']:.2g} | {r['bound']:.2g} | {r['verdict']} | "
              f"{r['unfused_f64']:.2g} / {r['fused_f64']:.2g} | {r['wrong_relative']:.2g} ({r['wrong_verdict']}) |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
