"""The ECA op as a TensorRT ahead-of-time Quickly Deployable Plugin (TensorRT >= 10.9, `tensorrt.plugin`).

The project's kernel source (plugins/kernels/eca_kernels.cu) is compiled to PTX (nvcc, else NVRTC through
cuda-python) and registered with `tensorrt.plugin` as `eca_deploy_aot::ECA`: the C++ plugin's name and attributes
(weights, bias, padding, gate, activation; docs/eca_op.md) in a namespace of its own, so that no C++ library
(namespace eca_deploy, version 2) can serve a node rewritten for it, nor this plugin a node fused for the library.
TensorRT's Python plugin creators are always version "1" and take exactly the attributes of the register signature:
prepare_for_aot() rewrites a fused model's ECA nodes to match, and refuses the nodes this kernel cannot run.
TensorRT embeds the PTX and the launch parameters in the engine, which then runs without Python: the path for pip
TensorRT, which ships no C++ headers. The engine keeps no attributes with an ahead-of-time implementation, so every
value the kernel needs is a launch argument (QDP_ARGUMENTS).

One kernel launch per layer (`eca_qdp_forward_f32` / `_f16`): a block pools a tile of channels and its window from X,
then scales them; no workspace. Only the one-input op: the residual form (two inputs) needs the C++ plugin, since a
QDP has a fixed input count and one name.

No `from __future__ import annotations` here: tensorrt.plugin reads the definitions' annotations as classes.
"""

import functools
import struct
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eca_deploy.errors import EcaDeployError
from eca_deploy.ops.contract import (
    ECA_ACTIVATIONS,
    ECA_GATES,
    ECA_MAX_K,
    ECA_OP_TYPE,
    ECA_PADDINGS,
    ECA_PLUGIN_NAMESPACE,
)

AOT_NAMESPACE = f"{ECA_PLUGIN_NAMESPACE}_aot"  # never the C++ library's: a stale library can serve no AOT node
AOT_VERSION = "1"  # what tensorrt.plugin gives every creator (_TemplatePluginCreator.plugin_version)
PLUGIN_ID = f"{AOT_NAMESPACE}::{ECA_OP_TYPE}"
MIN_TENSORRT = (10, 9)
KERNELS = {"float32": "eca_qdp_forward_f32", "float16": "eca_qdp_forward_f16"}
THREADS = 256
MAX_TILE = 32  # kQdpMaxTile
WEIGHT_ARGS = 64  # kQdpWeights: weights past k are 0
# The kernel's int32 arguments between X and Y, in order (eca_kernels.cu, ECA_QDP_KERNEL).
QDP_ARGUMENTS = ("n", "channels", "hw", "k", "tile", "bias", *(f"w{i}" for i in range(WEIGHT_ARGS)), "padding",
                 "gate", "activation")  # fmt: skip
PTX_ARCH = "75"  # the oldest GPU the kernels target: the driver compiles this PTX for any newer one
_INSTALL_COMPILER = (
    "install nvcc (pip install nvidia-cuda-nvcc, or the CUDA toolkit) or NVRTC (pip install cuda-python)"
)


def _float_bits(value: float) -> int:
    return struct.unpack("<i", struct.pack("<f", float(value)))[0]


def tile_for(channels: int, k: int) -> int:
    """Channels per block: at least the halo (k - 1, so pooling reads X at most twice) and 8, at most 32 and C."""
    return max(1, min(MAX_TILE, channels, max(8, k - 1)))


def kernel_arguments(n: Any, channels: int, hw: Any, weights: Sequence[float], bias: float, padding: str, gate: str,
                     activation: str) -> list[Any]:  # fmt: skip
    """The values of QDP_ARGUMENTS (n and hw may be TensorRT shape expressions); checks the attributes."""
    k = len(weights)
    if k % 2 != 1 or k > ECA_MAX_K:
        raise EcaDeployError(f"ECA weights: an odd number, 1 to {ECA_MAX_K}, got {k}")
    for name, value, allowed in (("padding", padding, ECA_PADDINGS), ("gate", gate, ECA_GATES),
                                 ("activation", activation, ECA_ACTIVATIONS)):  # fmt: skip
        if value not in allowed:
            raise EcaDeployError(f"ECA {name} {value!r}: one of {', '.join(allowed)}")
    bits = [_float_bits(w) for w in weights] + [0] * (WEIGHT_ARGS - k)
    codes = [ECA_PADDINGS.index(padding), ECA_GATES.index(gate), ECA_ACTIVATIONS.index(activation)]
    return [n, channels, hw, k, tile_for(channels, k), _float_bits(bias), *bits, *codes]


def launch_grid(n: Any, channels: int, k: int) -> Any:
    """Blocks of one launch: one per tile of each image."""
    tile = tile_for(channels, k)
    return n * ((channels + tile - 1) // tile)


def _source() -> Path:
    from eca_deploy.plugin.locate import source_dir

    plugins = source_dir()
    if plugins is None:
        raise EcaDeployError("the kernel sources (plugins/kernels) come with a checkout of eca-deploy, not the wheel")
    return plugins / "kernels" / "eca_kernels.cu"


def _cuda_include() -> Path | None:
    """CUDA's include/ (cuda_fp16.h) for NVRTC, if a toolkit is around (recent NVRTC has it built in)."""
    for root in (Path("/usr/local/cuda"), Path("/opt/cuda")):
        if (root / "include" / "cuda_fp16.h").is_file():
            return root / "include"
    return None


def _nvrtc() -> Any | None:
    try:
        from cuda.bindings import nvrtc
    except ImportError:
        try:
            from cuda import nvrtc  # cuda-python < 12.6
        except ImportError:
            return None
    return nvrtc


def compiler() -> str | None:
    """'nvcc', 'nvrtc' or None: what compile_ptx would use."""
    from eca_deploy.plugin.build import find_nvcc

    try:
        find_nvcc()
        return "nvcc"
    except EcaDeployError:
        return "nvrtc" if _nvrtc() is not None else None


def _ptx_nvcc(nvcc: str, source: Path, arch: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "eca_kernels.ptx"
        cmd = [nvcc, "-ptx", "-std=c++17", "-O3", "-DNDEBUG", f"-arch=compute_{arch}", f"-I{source.parent}",
               str(source), "-o", str(out)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise EcaDeployError(f"nvcc -ptx failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        return out.read_text()


def _ptx_nvrtc(nvrtc: Any, source: Path, arch: str) -> str:
    def check(result: Any, what: str, program: Any = None) -> None:
        if int(result) != 0:
            log = ""
            if program is not None:
                _, size = nvrtc.nvrtcGetProgramLogSize(program)
                buffer = b" " * size
                nvrtc.nvrtcGetProgramLog(program, buffer)
                log = next((line for line in buffer.decode(errors="replace").splitlines() if "error" in line), "")
            raise EcaDeployError(f"NVRTC {what} failed ({result}): {log.strip()}")

    err, program = nvrtc.nvrtcCreateProgram(source.read_bytes(), b"eca_kernels.cu", 0, [], [])
    check(err, "create")
    options = [f"--gpu-architecture=compute_{arch}".encode(), b"-std=c++17", b"-DNDEBUG", b"-default-device"]
    options.append(f"-I{source.parent}".encode())
    if (include := _cuda_include()) is not None:
        options.append(f"-I{include}".encode())
    (err,) = nvrtc.nvrtcCompileProgram(program, len(options), options)
    check(err, "compile", program)
    err, size = nvrtc.nvrtcGetPTXSize(program)
    check(err, "PTX size")
    ptx = b" " * size
    (err,) = nvrtc.nvrtcGetPTX(program, ptx)
    check(err, "PTX")
    nvrtc.nvrtcDestroyProgram(program)
    return ptx.rstrip(b"\0 ").decode()


@functools.lru_cache(maxsize=4)
def compile_ptx(arch: str = PTX_ARCH, use: str | None = None) -> str:
    """PTX of eca_kernels.cu for compute_<arch>, by nvcc if present, else NVRTC (or `use`: 'nvcc' | 'nvrtc')."""
    from eca_deploy.plugin.build import find_nvcc

    source = _source()
    use = use or compiler()
    if use == "nvcc":
        return _ptx_nvcc(find_nvcc(), source, arch)
    if use == "nvrtc" and (nvrtc := _nvrtc()) is not None:
        return _ptx_nvrtc(nvrtc, source, arch)
    raise EcaDeployError(f"no CUDA compiler for the plugin's PTX: {_INSTALL_COMPILER}")


def _tensorrt_version() -> tuple[int, int] | None:
    try:
        import tensorrt
    except ImportError:
        return None
    major, minor, *_ = [*(int(p) for p in tensorrt.__version__.split(".")[:2] if p.isdigit()), 0, 0]
    return major, minor


def qdp_status() -> tuple[bool, str]:
    """Whether the ahead-of-time plugin can be registered here, and why (not)."""
    version = _tensorrt_version()
    if version is None:
        return False, "TensorRT's Python package is not installed (pip install tensorrt, >= 10.9)"
    if version < MIN_TENSORRT:
        return False, f"TensorRT {version[0]}.{version[1]} has no ahead-of-time Python plugins: 10.9 or newer needed"
    try:
        import tensorrt.plugin as trtp
    except ImportError as exc:
        return False, f"tensorrt.plugin cannot be imported: {exc}"
    if not hasattr(trtp, "aot_impl"):
        return False, "this TensorRT build's tensorrt.plugin has no aot_impl"
    if source_missing := _source_missing():
        return False, source_missing
    use = compiler()
    if use is None:
        return False, f"no CUDA compiler for the plugin's PTX: {_INSTALL_COMPILER}"
    return True, f"{PLUGIN_ID} ahead-of-time plugin: TensorRT {version[0]}.{version[1]}, PTX by {use}"


def _source_missing() -> str | None:
    try:
        _source()
    except EcaDeployError as exc:
        return str(exc)
    return None


_REGISTERED = False


def register() -> None:
    """Register eca_deploy_aot::ECA with tensorrt.plugin (once per process); a one-line EcaDeployError if it cannot."""
    global _REGISTERED
    if _REGISTERED:
        return
    available, reason = qdp_status()
    if not available:
        raise EcaDeployError(f"ahead-of-time ECA plugin unavailable: {reason}")
    _define()
    _REGISTERED = True


def _define() -> None:
    """The tensorrt.plugin definitions (their signatures are the attribute contract, checked by tensorrt.plugin)."""
    from typing import List, Tuple  # noqa: UP035 - the annotation forms of TensorRT's samples

    import numpy as np
    import numpy.typing as npt
    import tensorrt as trt
    import tensorrt.plugin as trtp

    weights_type = npt.NDArray[np.float32]
    outputs_type = Tuple[trtp.TensorDesc]  # noqa: UP006
    aot_return = Tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]  # noqa: UP006

    def eca_desc(
        x: trtp.TensorDesc, weights: weights_type, bias: float, padding: str, gate: str, activation: str
    ) -> trtp.TensorDesc:
        return x.like()

    def eca_autotune(x: trtp.TensorDesc, outputs: outputs_type) -> List[trtp.AutoTuneCombination]:  # noqa: UP006
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16", "LINEAR")]

    def eca_aot_impl(
        x: trtp.TensorDesc,
        weights: weights_type,
        bias: float,
        padding: str,
        gate: str,
        activation: str,
        outputs: outputs_type,
        tactic: int,
    ) -> aot_return:
        dims = x.shape_expr
        if x.ndim != 4 or not dims[1].is_constant:
            raise EcaDeployError("the ahead-of-time ECA plugin needs a 4-D NCHW input with a fixed channel count")
        channels = int(dims[1].constant_value)
        w = [float(v) for v in np.asarray(weights, dtype=np.float32).reshape(-1)]
        values = kernel_arguments(dims[0], channels, dims[2] * dims[3], w, bias, padding, gate, activation)
        extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(v) for v in values])
        params = trtp.KernelLaunchParams()
        params.grid_x = trtp.SymInt32(launch_grid(dims[0], channels, len(w)))
        params.block_x = THREADS
        params.shared_mem = 0
        name = KERNELS["float16" if x.dtype == trt.float16 else "float32"]
        return name.encode(), compile_ptx().encode(), params, extra

    trtp.register(PLUGIN_ID)(eca_desc)
    trtp.autotune(PLUGIN_ID)(eca_autotune)
    trtp.aot_impl(PLUGIN_ID)(eca_aot_impl)


def has_entry_points(ptx: str) -> bool:
    """Whether `ptx` defines both kernels of the ahead-of-time plugin."""
    return all(f".entry {name}(" in ptx for name in KERNELS.values())


# -- the model side: ECA nodes rewritten for this plugin (no TensorRT needed) ---------------------------------------

_BUILD_THE_LIBRARY = "build the C++ plugin (`eca-deploy plugin build`, needs the TensorRT headers)"


def _known_types(model: Any) -> dict[str, Any]:
    graph = model.graph
    return {v.name: v.type for v in (*graph.input, *graph.value_info, *graph.output) if v.type.HasField("tensor_type")}


def _channel_counts(model: Any, nodes: list[Any]) -> list[int | None]:
    """The fixed channel count of each ECA node's input (None: dynamic or unknown), by ONNX shape inference.

    A model whose ECA functions are stripped has no shapes past an ECA node: its output is given its input's type
    and inference runs again, at most once per ECA node."""
    import onnx
    from onnx import shape_inference

    work = onnx.ModelProto()
    work.CopyFrom(model)
    del work.graph.value_info[:]
    for _ in range(len(nodes) + 1):
        try:
            work = shape_inference.infer_shapes(work)
        except Exception:  # an unusual graph: what is known so far
            break
        types = _known_types(work)
        missing = [n for n in nodes if n.input[0] in types and n.output[0] not in types]
        if not missing:
            break
        for node in missing:
            info = work.graph.value_info.add()
            info.name = node.output[0]
            info.type.CopyFrom(types[node.input[0]])
    types = _known_types(work)
    counts: list[int | None] = []
    for node in nodes:
        tensor = types.get(node.input[0])
        dims = list(tensor.tensor_type.shape.dim) if tensor is not None else []
        counts.append(int(dims[1].dim_value) if len(dims) == 4 and dims[1].HasField("dim_value") else None)
    return counts


def aot_refusal(model: Any) -> str | None:
    """Why the ahead-of-time kernel cannot run one of the model's ECA nodes (None: it runs them all)."""
    from eca_deploy.ops.contract import ECA_DOMAIN
    from eca_deploy.ops.onnx_function import node_attributes

    nodes = [n for n in model.graph.node if n.domain == ECA_DOMAIN and n.op_type == ECA_OP_TYPE]
    for node in nodes:
        if sum(1 for i in node.input if i) > 1:
            return (
                f"ECA node {node.name!r} takes its block's residual (two inputs), which the ahead-of-time plugin "
                f"cannot: fuse with --no-residual (`eca-deploy fuse --no-residual`), or {_BUILD_THE_LIBRARY}"
            )
        try:
            attrs = node_attributes(node)
            kernel_arguments(1, 1, 1, attrs.weights, attrs.bias, attrs.padding, attrs.gate, attrs.activation)
        except (ValueError, EcaDeployError) as exc:
            return f"ECA node {node.name!r}: {exc} (the ahead-of-time kernel's limits)"
    for node, channels in zip(nodes, _channel_counts(model, nodes), strict=True):
        if channels is None:
            return (
                f"ECA node {node.name!r} has no fixed channel count, which the ahead-of-time kernel needs: export "
                f"with fixed channels, or {_BUILD_THE_LIBRARY}"
            )
    return None


def prepare_for_aot(model: Any) -> Any:
    """A copy of `model` whose ECA nodes name this plugin: namespace AOT_NAMESPACE, version "1", no field_set, and
    every attribute of the register signature written out; a one-line EcaDeployError for nodes it cannot run."""
    import onnx
    from onnx import helper

    from eca_deploy.ops.contract import ECA_DOMAIN, ECA_FIELD_SET_ATTR
    from eca_deploy.ops.onnx_function import node_attributes

    reason = aot_refusal(model)
    if reason is not None:
        raise EcaDeployError(reason)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for node in copy.graph.node:
        if node.domain != ECA_DOMAIN or node.op_type != ECA_OP_TYPE:
            continue
        values = node_attributes(node).node_attributes()
        values.update(plugin_namespace=AOT_NAMESPACE, plugin_version=AOT_VERSION)
        dropped = {ECA_FIELD_SET_ATTR, *values}
        keep = [a for a in node.attribute if a.name not in dropped]
        del node.attribute[:]
        node.attribute.extend(keep)
        node.attribute.extend(helper.make_attribute(name, value) for name, value in values.items())
    return copy


def compiler_version(use: str | None = None) -> str | None:
    """The version of the PTX compiler `use` ('nvcc' | 'nvrtc', default compiler()), e.g. '12.6'; None: none."""
    from eca_deploy.plugin.build import find_nvcc

    use = use or compiler()
    if use == "nvcc":
        out = subprocess.run([find_nvcc(), "--version"], capture_output=True, text=True, check=False).stdout
        found = [line.split("release", 1)[1].split(",")[0].strip() for line in out.splitlines() if "release" in line]
        return found[0] if found else None
    if use == "nvrtc" and (nvrtc := _nvrtc()) is not None:
        err, major, minor = nvrtc.nvrtcVersion()
        return f"{major}.{minor}" if int(err) == 0 else None
    return None
