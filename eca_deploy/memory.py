"""Activation memory: estimated before a run at a given size and batch, refused when the machine lacks it.

An export or check at an absurd `--img-size` would otherwise grow until the kernel kills it. Estimates are
the peak of live intermediate tensors (each freed after its last use, as ONNX Runtime's planner and a
no-grad PyTorch forward free them), from ONNX shape inference or from a PyTorch forward on the meta device
(shapes only, no memory), or, for a model with real weights, from a small-size probe scaled by
(H * W) / (h * w) and the batch.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from eca_deploy.errors import SettingError

PROBE_SIZE = 64  # side of the small probe image for a model with real weights
FLOAT_BYTES = 4
GiB = 1 << 30
ONNX_ELEMENT_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}


def available_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """Memory a new allocation can get without swapping: MemAvailable, else free physical pages; None if unknown."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def _gib(n: int) -> str:
    return f"{n / GiB:,.1f} GiB" if n >= GiB / 10 else f"{n / (1 << 20):,.0f} MiB"


def require(needed: int, what: str, available: int | None = None, lower: str = "{img_size} or {batch}") -> None:
    """Refuse, with the estimate and what to lower (settings as `SettingError` names them), when `needed` bytes
    exceed the memory available."""
    free = available_bytes() if available is None else available
    if free is None or needed <= free:
        return
    raise SettingError(
        f"{what} needs about {_gib(needed)} of activation memory (estimate), this machine has {_gib(free)} "
        f"available: lower " + lower
    )


def image_bytes(height: int, width: int, count: int) -> int:
    """Preprocessed float32 RGB images held at once."""
    return 3 * height * width * count * FLOAT_BYTES


# -- ONNX: shape inference at the requested geometry, then the peak of live tensors in node order ---------


def _with_input_geometry(model: Any, height: int, width: int, batch: int) -> Any:
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    initializers = {i.name for i in copy.graph.initializer}
    del copy.graph.value_info[:]
    for value in copy.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4:
            for dim, size in zip(dims, (batch, None, height, width), strict=True):
                if size is not None:
                    dim.ClearField("dim_param")
                    dim.dim_value = size
    for value in copy.graph.output:  # outputs are inferred again from the new input
        value.type.tensor_type.ClearField("shape")
    return copy


def _tensor_bytes(value: Any) -> int | None:
    t = value.type.tensor_type
    if not t.HasField("shape"):
        return None
    n = 1
    for dim in t.shape.dim:
        if not dim.HasField("dim_value"):
            return None
        n *= dim.dim_value
    return n * ONNX_ELEMENT_BYTES.get(t.elem_type, 4)


def onnx_activation_bytes(model: Any, height: int, width: int, batch: int) -> int:
    """Peak bytes of live tensors when `model` (an onnx.ModelProto) runs on batch x 3 x height x width.

    A tensor whose shape inference cannot tell is taken as large as its node's largest input.
    """
    import onnx

    inferred = onnx.shape_inference.infer_shapes(_with_input_geometry(model, height, width, batch))
    graph = inferred.graph
    initializers = {i.name for i in graph.initializer}
    sizes: dict[str, int | None] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        sizes[value.name] = _tensor_bytes(value)
    last_use: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            last_use[name] = i
    outputs = {o.name for o in graph.output}
    live: dict[str, int] = {v.name: sizes.get(v.name) or 0 for v in graph.input if v.name not in initializers}
    peak = current = sum(live.values())
    for i, node in enumerate(graph.node):
        largest_input = max((live.get(n, 0) for n in node.input), default=0)
        for name in node.output:
            if name:
                live[name] = sizes.get(name) or largest_input
                current += live[name]
        peak = max(peak, current)
        for name in {*node.input, *node.output}:
            if name in live and last_use.get(name, -1) <= i and name not in outputs:
                current -= live.pop(name)
    return peak


# -- PyTorch: a no-grad forward whose live tensors are counted as they are created and freed --------------


def _count_live(forward: Callable[[], Any]) -> int:
    """Peak bytes of the tensors alive during `forward()` (views share their base's memory: not counted)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    state = {"current": 0, "peak": 0}

    def freed(n: int) -> None:
        state["current"] -= n

    def outputs(value: Any) -> Iterator[Any]:
        import torch

        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, list | tuple):
            for v in value:
                yield from outputs(v)

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            result = func(*args, **(kwargs or {}))
            for tensor in outputs(result):
                if tensor._is_view():
                    continue
                n = tensor.numel() * tensor.element_size()
                state["current"] += n
                state["peak"] = max(state["peak"], state["current"])
                weakref.finalize(tensor, freed, n)
            return result

    with Counter():
        forward()
    return state["peak"]


def torch_activation_bytes(module: Any, height: int, width: int, batch: int, probe: int = PROBE_SIZE) -> int:
    """Peak activation bytes of `module`'s no-grad forward on batch x 3 x height x width.

    On the meta device the forward runs at the full size (shapes only); with real weights it runs on one
    image of at most `probe` x `probe` pixels and is scaled by pixels and batch.
    """
    import torch

    param = next(iter(module.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    if device.type == "meta":
        h, w, n = height, width, batch
    else:
        h, w, n = min(height, probe), min(width, probe), 1
    x = torch.zeros(n, 3, h, w, device=device)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            peak = _count_live(lambda: module(x))
    finally:
        module.train(was_training)
    scale = (height * width) / (h * w) * (batch / n)
    return int(peak * scale)


def check_onnx_memory(
    model: Any, height: int, width: int, batch: int, images: int, what: str, available: int | None = None
) -> None:
    """Refuse running `model` and an equal reference on `images` photos when the free memory cannot hold it."""
    try:
        activations = onnx_activation_bytes(model, height, width, batch)
    except Exception:  # shape inference refused the graph: no estimate, run as before
        return
    require(2 * activations + image_bytes(height, width, images), what, available)


def check_torch_memory(
    module: Any, height: int, width: int, batch: int, images: int, what: str, available: int | None = None
) -> None:
    """Refuse a PyTorch forward of `module` at this geometry (and `images` photos) beyond the free memory.

    A module whose small-size probe cannot run is not estimated: its own forward reports the problem.
    """
    try:
        activations = torch_activation_bytes(module, height, width, batch)
    except Exception:  # e.g. attention that cannot tile the probe size
        return
    require(activations + image_bytes(height, width, images), what, available)
