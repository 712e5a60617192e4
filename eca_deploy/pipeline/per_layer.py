"""`check --per-layer`: compare block outputs along the network and name the first where error jumps.

Blocks are the children of the model's top-level Sequential stages (`layer2.1`, `features.7`) and
top-level layers such as `fc`. Their ONNX tensors are found from the exporter's scope names
(`/layer2/layer2.1/relu_1/Relu`): the last node inside a block's scope produces the block's output.
The reference is PyTorch for float models, or the FP32 ONNX (`--reference-onnx`, required for a Q/DQ
model) whenever one is given: then the blocks are read from that ONNX's scope names if no PyTorch
model is at hand.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from torch import nn

from eca_deploy.backends.onnxruntime_runner import OnnxRuntimeRunner
from eca_deploy.errors import EcaDeployError
from eca_deploy.onnx_io import load_onnx

# A block "jumps" when its relative error exceeds this floor and 10x every error before it.
JUMP_FLOOR = {"fp32": 1e-4, "fp16": 1e-2, "int8": 5e-2}
JUMP_FACTOR = 10.0


def module_path(node_name: str) -> str | None:
    """'/layer1/layer1.0/conv1/Conv' -> 'layer1.0.conv1' (TorchScript exporter scope names)."""
    parts = [p for p in node_name.split("/") if p]
    if len(parts) < 2 or not node_name.startswith("/"):
        return None
    path = ""
    for part in parts[:-1]:
        path = part if (not path or part.startswith(path + ".")) else f"{path}.{part}"
    return path


def block_names(model: nn.Module) -> list[str]:
    """Top-level Sequential children and top-level non-Sequential layers, in definition order."""
    names = []
    for name, child in model.named_children():
        if isinstance(child, nn.Sequential):
            names += [f"{name}.{sub}" for sub, _ in child.named_children()]
        else:
            names.append(name)
    return names


def onnx_block_names(model: onnx.ModelProto) -> list[str]:
    """The blocks `block_names` would give, read from the exporter's scope names (no PyTorch model needed).

    A two-level scope whose second part extends the first (`layer1/layer1.0`) is a Sequential child; a
    scope of one level (`fc`, `conv1`) is a top-level layer.
    """
    names: dict[str, None] = {}
    for node in model.graph.node:
        path = module_path(node.name)
        if not path:
            continue
        parts = path.split(".")
        names.setdefault(".".join(parts[:2]) if len(parts) > 1 and parts[1].isdigit() else parts[0])
    return list(names)


def block_tensors(model: onnx.ModelProto, blocks: list[str]) -> dict[str, str]:
    """Map each block to the output tensor of the last ONNX node inside its scope."""
    last: dict[str, str] = {}
    for node in model.graph.node:
        path = module_path(node.name)
        if path is None:
            continue
        for block in blocks:
            if path == block or path.startswith(block + "."):
                last[block] = node.output[0]
                break
    return {b: last[b] for b in blocks if b in last}


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> bytes:
    """A copy of `model` that also outputs the tensors `names` (types from shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*inferred.graph.value_info, *inferred.graph.output)}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    existing = {o.name for o in out.graph.output}
    for name in names:
        if name not in existing:
            out.graph.output.append(
                onnx.helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT), None)
            )
    return out.SerializeToString()


def _run_onnx(model: onnx.ModelProto, names: list[str], images: np.ndarray, optimize: bool) -> dict[str, np.ndarray]:
    runner = OnnxRuntimeRunner(_with_outputs(model, names), "cpu", optimize=optimize)
    batch = runner.inputs[0].shape[0]
    fixed = isinstance(batch, int)
    feed = images if not fixed else np.concatenate([images, np.repeat(images[-1:], batch - len(images), 0)])[:batch]
    outputs = runner.infer({runner.inputs[0].name: np.ascontiguousarray(feed)})
    return {n: np.asarray(outputs[n], dtype=np.float64)[: len(images)] for n in names}


def torch_source(model: nn.Module, blocks: list[str], with_nodes: set[str]) -> dict[str, str]:
    """The PyTorch module whose output each block's ONNX tensor holds.

    The exporter folds a BatchNorm into the Conv before it: a top-level `conv1` node then outputs what
    PyTorch's `bn1` does, and `bn1` has no node of its own.
    """
    modules = dict(model.named_modules())
    source = {}
    for i, block in enumerate(blocks):
        if block not in with_nodes:
            continue
        source[block] = block
        for follower in blocks[i + 1 :]:
            if follower in with_nodes or not isinstance(modules[follower], nn.modules.batchnorm._BatchNorm):
                break
            source[block] = follower
    return source


def _run_torch(model: nn.Module, sources: dict[str, str], images: np.ndarray) -> dict[str, np.ndarray]:
    import torch

    captured: dict[str, np.ndarray] = {}
    modules = dict(model.named_modules())
    hooks = [
        modules[src].register_forward_hook(
            lambda _m, _i, out, b=b: captured.__setitem__(b, out.detach().double().numpy().copy())
        )
        for b, src in sources.items()
    ]
    try:
        with torch.no_grad():
            model(torch.from_numpy(images))
    finally:
        for h in hooks:
            h.remove()
    return captured


def _errors(ref: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    ref, out = ref.reshape(len(ref), -1), out.reshape(len(out), -1)
    rel = float(np.abs(out - ref).max() / max(float(np.abs(ref).max()), 1e-6))
    denom = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cos = float(np.min(np.where(denom > 0, (ref * out).sum(axis=1) / np.maximum(denom, 1e-300), 1.0)))
    return rel, cos


def compare_layers(
    target: Any, torch_model: nn.Module, images: np.ndarray, reference_onnx: Any = None
) -> dict[str, Any]:
    """Per-block relative error and cosine along the network, and the first block where error jumps."""
    if target.onnx is None:
        raise EcaDeployError("--per-layer needs an ONNX model (--onnx): engine layers are fused beyond recognition")
    images = np.ascontiguousarray(images, dtype=np.float32)
    if target.precision == "int8" or reference_onnx is not None or torch_model is None:
        if reference_onnx is None:
            raise EcaDeployError("--per-layer on a Q/DQ model compares against its FP32 ONNX: pass --reference-onnx")
        ref_model = load_onnx(reference_onnx)
        blocks = block_names(torch_model) if torch_model is not None else onnx_block_names(ref_model)
        tensors = block_tensors(ref_model, blocks)
        present = {o for n in target.onnx.graph.node for o in n.output}
        tensors = {b: t for b, t in tensors.items() if t in present}
        reference = _run_onnx(ref_model, list(tensors.values()), images, optimize=True)
        reference = {b: reference[t] for b, t in tensors.items()}
        against = "fp32 onnx"
    else:
        blocks = block_names(torch_model)
        tensors = block_tensors(target.onnx, blocks)
        reference = _run_torch(torch_model, torch_source(torch_model, blocks, set(tensors)), images)
        against = "pytorch"
    if not tensors:
        raise EcaDeployError(
            "no block of the model could be found in the ONNX graph: --per-layer needs scope names "
            "from the TorchScript exporter (eca-deploy export's default)"
        )
    outputs = _run_onnx(target.onnx, list(tensors.values()), images, optimize=target.precision != "int8")
    floor = JUMP_FLOOR.get(target.precision, JUMP_FLOOR["fp32"])
    rows, first_jump, worst_before = [], None, 0.0
    for block, tensor in tensors.items():
        ref, out = reference[block], outputs[tensor]
        if ref.shape != out.shape:
            continue
        rel, cos = _errors(ref, out)
        jump = first_jump is None and rel > floor and rel > JUMP_FACTOR * worst_before
        if jump:
            first_jump = block
        worst_before = max(worst_before, rel)
        rows.append({"block": block, "tensor": tensor, "rel_error": rel, "cosine": cos, "jump": jump})
    return {"against": against, "floor": floor, "first_jump": first_jump, "blocks": rows}
