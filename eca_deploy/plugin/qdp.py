"""The ECA op as a TensorRT ahead-of-time Quickly Deployable Plugin (TensorRT >= 10.15, `tensorrt.plugin`).

The project's kernel source (plugins/kernels/eca_kernels.cu, device code only: -DECA_QDP_ONLY) is compiled to PTX
(nvcc, else NVRTC through cuda-python) and registered with `tensorrt.plugin` as `eca_deploy_aot::ECA`: the C++
plugin's name and attribute names (weights, bias, padding, gate, activation; docs/eca_op.md) in a namespace of its own,
so that no C++ library (namespace eca_deploy, version 2) can serve a node rewritten for it, nor this plugin a node fused
for the library. TensorRT's Python plugin creators are always version "1" and take the attributes of the register
signature in its order: prepare_for_aot() rewrites a fused model's ECA nodes to match, and refuses the nodes this
kernel cannot run. TensorRT embeds the PTX and the launch parameters in the engine, which then runs without Python:
the path for pip TensorRT, which ships no C++ headers. The engine keeps no attributes with an ahead-of-time
implementation, so every value the kernel needs is a launch argument (QDP_ARGUMENTS).

Every attribute travels as an array (the bias a one-element FLOATS, the enums one-element INTS of their index): a
scalar annotation makes TensorRT 10.9 .. 11.1's create_plugin call float()/int() on a one-element array, which
NumPy >= 2.4 refuses, and the ONNX parser passes STRING attributes with their terminating NUL. Floats reach the kernel
as the high and low 16 bits of their bits, so every launch argument (a constant of TensorRT's dimension expressions)
is non-negative. TensorRT 10.15 is the oldest whose ONNX parser hands a Python plugin's creator the op type (earlier
parsers pass the node's name, which no QDP creator is registered under).

One kernel launch per layer (`eca_qdp_forward_f32` / `_f16`): a block pools a tile of channels and its window from X,
then scales them; no workspace. Only the one-input op: the residual form (two inputs) needs the C++ plugin, since a
QDP has a fixed input count and one name.

No `from __future__ import annotations` here: tensorrt.plugin reads the definitions' annotations as classes.
"""

import ctypes
import functools
import re
import struct
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eca_deploy.errors import EcaDeployError
from eca_deploy.ops.contract import (
    ECA_ACTIVATIONS,
    ECA_DOMAIN,
    ECA_FIELD_SET_ATTR,
    ECA_GATES,
    ECA_MAX_K,
    ECA_OP_TYPE,
    ECA_PADDINGS,
    ECA_PLUGIN_NAMESPACE,
    is_eca_node,
)
from eca_deploy.plugin.build import find_nvcc
from eca_deploy.plugin.locate import cuda_include_dir, source_dir

# ops.onnx_function imports onnx: imported where a model's nodes are read (this module is on the TensorRT runner's
# import path, which `eca-deploy --help` takes).

AOT_NAMESPACE = f"{ECA_PLUGIN_NAMESPACE}_aot"  # never the C++ library's: a stale library can serve no AOT node
AOT_VERSION = "1"  # what tensorrt.plugin gives every creator (_TemplatePluginCreator.plugin_version)
PLUGIN_ID = f"{AOT_NAMESPACE}::{ECA_OP_TYPE}"
MIN_TENSORRT = (10, 15)  # the oldest ONNX parser that looks a Python plugin's creator up by op type
MIN_TENSORRT_TEXT = ".".join(map(str, MIN_TENSORRT))
KERNELS = {"float32": "eca_qdp_forward_f32", "float16": "eca_qdp_forward_f16"}
THREADS = 256
MAX_TILE = 32  # kQdpMaxTile
WEIGHT_ARGS = 64  # kQdpWeights: weights past k are 0
ENUMS = {"padding": ECA_PADDINGS, "gate": ECA_GATES, "activation": ECA_ACTIVATIONS}  # index = the kernel's code
# The kernel's int32 arguments between X and Y, in order (eca_kernels.cu, ECA_QDP_KERNEL); floats as two 16-bit halves.
QDP_ARGUMENTS = ("n", "channels", "hw", "k", "tile", "bias_high", "bias_low",
                 *(f"w{i}_{half}" for i in range(WEIGHT_ARGS) for half in ("high", "low")), *ENUMS)  # fmt: skip
PTX_ARCH = "75"  # the oldest GPU the kernels target: the driver compiles this PTX for any newer one
_INSTALL_COMPILER = (
    "install nvcc (pip install nvidia-cuda-nvcc, or the CUDA toolkit) or NVRTC (pip install cuda-python)"
)
# PTX ISA version -> the CUDA release that introduced it (a driver must support that CUDA to load the PTX)
PTX_ISA_CUDA = {(7, 8): (11, 8), (8, 0): (12, 0), (8, 1): (12, 1), (8, 2): (12, 2), (8, 3): (12, 3), (8, 4): (12, 4),
                (8, 5): (12, 5), (8, 6): (12, 7), (8, 7): (12, 8), (8, 8): (12, 9), (9, 0): (13, 0)}  # fmt: skip


def float_halves(value: float) -> tuple[int, int]:
    """The high and low 16 bits of `value`'s float32 bits (each 0 .. 65535)."""
    bits = struct.unpack("<I", struct.pack("<f", float(value)))[0]
    return bits >> 16, bits & 0xFFFF


def tile_for(channels: int, k: int) -> int:
    """Channels per block: at least the halo (k - 1, so pooling reads X at most twice) and 8, at most 32 and C."""
    return max(1, min(MAX_TILE, channels, max(8, k - 1)))


def enum_code(name: str, value: Any) -> int:
    """The kernel's code of enum attribute `name`: its index, given as the value's name or the index itself."""
    allowed = ENUMS[name]
    if isinstance(value, str) and value in allowed:
        return allowed.index(value)
    if not isinstance(value, str | bytes) and int(value) == value and 0 <= int(value) < len(allowed):
        return int(value)
    codes = ", ".join(f"{i} ({v})" for i, v in enumerate(allowed))
    raise EcaDeployError(f"ECA {name} {value!r}: one of {', '.join(allowed)} (codes {codes})")


def kernel_arguments(
    n: Any, channels: int, hw: Any, weights: Sequence[float], bias: float, padding: Any, gate: Any, activation: Any
) -> list[Any]:
    """The values of QDP_ARGUMENTS (n and hw may be TensorRT shape expressions; enums as names or codes); checks
    the attributes. Every value is a non-negative int or an expression."""
    k = len(weights)
    if k % 2 != 1 or k > ECA_MAX_K:
        raise EcaDeployError(f"ECA weights: an odd number, 1 to {ECA_MAX_K}, got {k}")
    codes = [enum_code("padding", padding), enum_code("gate", gate), enum_code("activation", activation)]
    halves = [h for w in [*weights, *[0.0] * (WEIGHT_ARGS - k)] for h in float_halves(w)]
    return [n, int(channels), hw, k, tile_for(channels, k), *float_halves(bias), *halves, *codes]


def launch_grid(n: Any, channels: int, k: int) -> Any:
    """Blocks of one launch: one per tile of each image."""
    tile = tile_for(channels, k)
    return n * ((channels + tile - 1) // tile)


@dataclass(frozen=True)
class QdpLaunch:
    """One layer's launch as the plugin hands it to TensorRT: kernel name, grid, block, shared memory, arguments."""

    kernel: str
    grid_x: Any
    block_x: int
    shared_mem: int
    arguments: list[Any]


def qdp_launch(
    dtype: str,
    n: Any,
    channels: int,
    hw: Any,
    weights: Sequence[float],
    bias: float,
    padding: Any,
    gate: Any,
    activation: Any,
) -> QdpLaunch:
    """The launch of one ECA layer ('float32' | 'float16'); aot_impl gives TensorRT exactly this (with shape
    expressions for n and hw), and the checks launch it with numbers."""
    values = kernel_arguments(n, channels, hw, weights, bias, padding, gate, activation)
    return QdpLaunch(KERNELS[dtype], launch_grid(n, channels, len(weights)), THREADS, 0, values)


def _source() -> Path:
    plugins = source_dir()
    if plugins is None:
        raise EcaDeployError("the kernel sources (plugins/kernels) come with a checkout of eca-deploy, not the wheel")
    return plugins / "kernels" / "eca_kernels.cu"


def _nvrtc() -> Any | None:
    """cuda-python's NVRTC module when it imports and its library loads, else None."""
    try:
        from cuda.bindings import nvrtc
    except ImportError:
        try:
            from cuda import nvrtc  # cuda-python < 12.6
        except ImportError:
            return None
    try:  # cuda.bindings loads libnvrtc on first use: DynamicLibNotFoundError (a RuntimeError) when it is missing
        err, _major, _minor = nvrtc.nvrtcVersion()
    except Exception:
        return None
    return nvrtc if int(err) == 0 else None


def compiler() -> str | None:
    """'nvcc', 'nvrtc' or None: what compile_ptx would use."""
    try:
        find_nvcc()
        return "nvcc"
    except EcaDeployError:
        return "nvrtc" if _nvrtc() is not None else None


def _ptx_nvcc(nvcc: str, source: Path, arch: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "eca_kernels.ptx"
        cmd = [nvcc, "-ptx", "-std=c++17", "-O3", "-DNDEBUG", "-DECA_QDP_ONLY", "-diag-suppress=177",
               f"-arch=compute_{arch}", f"-I{source.parent}", str(source), "-o", str(out)]  # fmt: skip
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
            if "cuda_fp16.h" in log:
                log += " (set CUDA_HOME to a CUDA toolkit, or pip install nvidia-cuda-runtime)"
            raise EcaDeployError(f"NVRTC {what} failed ({result}): {log.strip()}")

    err, program = nvrtc.nvrtcCreateProgram(source.read_bytes(), b"eca_kernels.cu", 0, [], [])
    check(err, "create")
    options = [f"--gpu-architecture=compute_{arch}".encode(), b"-std=c++17", b"-DNDEBUG", b"-default-device"]
    options.append(f"-I{source.parent}".encode())
    if (include := cuda_include_dir()) is not None:
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
    """PTX of eca_kernels.cu's ahead-of-time kernels for compute_<arch>, by nvcc if present, else NVRTC (or `use`:
    'nvcc' | 'nvrtc')."""
    source = _source()
    use = use or compiler()
    if use == "nvcc":
        return _ptx_nvcc(find_nvcc(), source, arch)
    if use == "nvrtc" and (nvrtc := _nvrtc()) is not None:
        try:
            return _ptx_nvrtc(nvrtc, source, arch)
        except EcaDeployError:
            raise
        except Exception as exc:  # the library failed past loading: one line, never a traceback
            raise EcaDeployError(f"NVRTC failed: {type(exc).__name__}: {exc}") from None
    raise EcaDeployError(f"no CUDA compiler for the plugin's PTX: {_INSTALL_COMPILER}")


def ptx_isa(ptx: str) -> tuple[int, int] | None:
    """The PTX ISA version of `ptx` (its `.version` line), e.g. (9, 0) from nvcc 13."""
    found = re.search(r"^\s*\.version\s+(\d+)\.(\d+)", ptx, flags=re.M)
    return (int(found.group(1)), int(found.group(2))) if found else None


def cuda_for_ptx_isa(isa: tuple[int, int]) -> tuple[int, int]:
    """The CUDA release whose driver loads PTX of ISA `isa` at the earliest (ISA 9.x: CUDA 13.x)."""
    return PTX_ISA_CUDA.get(isa) or (isa[0] + 4, isa[1])


def driver_cuda_version() -> tuple[int, int] | None:
    """The CUDA version the installed driver supports (cuDriverGetVersion of libcuda), None without a driver."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        version = ctypes.c_int(0)
        if lib.cuDriverGetVersion(ctypes.byref(version)) == 0 and version.value > 0:
            return version.value // 1000, (version.value % 1000) // 10
    return None


def driver_refusal(isa: tuple[int, int] | None, driver: tuple[int, int] | None) -> str | None:
    """Why a driver for CUDA `driver` cannot load PTX of ISA `isa` (None: it can, or one of them is unknown)."""
    if isa is None or driver is None:
        return None
    needs = cuda_for_ptx_isa(isa)
    if driver >= needs:
        return None
    return (
        f"the plugin's PTX (ISA {isa[0]}.{isa[1]}) needs a driver for CUDA {needs[0]}.{needs[1]} or newer, this one "
        f"supports CUDA {driver[0]}.{driver[1]}: update the driver, or compile with a CUDA {driver[0]}.x nvcc/NVRTC "
        f"(CUDACXX=/path/to/nvcc, or pip install 'cuda-python<{driver[0] + 1}' with no nvcc on PATH)"
    )


def _tensorrt_version() -> tuple[int, int] | None:
    try:
        import tensorrt
    except ImportError:
        return None
    major, minor, *_ = [*(int(p) for p in tensorrt.__version__.split(".")[:2] if p.isdigit()), 0, 0]
    return major, minor


def qdp_status() -> tuple[bool, str]:
    """Whether the ahead-of-time plugin can be registered here, and why (not): TensorRT, its tensorrt.plugin, the
    sources, a compiler that makes the PTX (compiled here, once per process) and a driver that loads it."""
    version = _tensorrt_version()
    if version is None:
        return False, f"TensorRT's Python package is not installed (pip install tensorrt, >= {MIN_TENSORRT_TEXT})"
    if version < MIN_TENSORRT:
        return False, (
            f"TensorRT {version[0]}.{version[1]}'s ONNX parser cannot reach an ahead-of-time Python plugin: "
            f"{MIN_TENSORRT_TEXT} or newer needed"
        )
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
    try:
        ptx = compile_ptx(use=use)
    except EcaDeployError as exc:
        return False, str(exc)
    if reason := driver_refusal(ptx_isa(ptx), driver_cuda_version()):
        return False, reason
    isa = ".".join(map(str, ptx_isa(ptx) or ("?",)))
    return True, (
        f"{PLUGIN_ID} ahead-of-time plugin: TensorRT {version[0]}.{version[1]} (>= {MIN_TENSORRT_TEXT}), PTX by {use} "
        f"(ISA {isa})"
    )


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
    define()
    _REGISTERED = True


def _one(values: Any, name: str) -> Any:
    """The single element of a one-element attribute array."""
    import numpy as np

    flat = np.asarray(values).reshape(-1)
    if flat.size != 1:
        raise EcaDeployError(f"ECA {name}: one value expected, got {flat.size}")
    return flat[0].item()


def define(ptx: Any = None) -> None:
    """The tensorrt.plugin definitions (their signatures are the attribute contract, checked by tensorrt.plugin);
    `ptx()` gives the PTX (default: compile_ptx)."""
    from typing import List, Tuple  # noqa: UP035 - the annotation forms of TensorRT's samples

    import numpy as np
    import numpy.typing as npt
    import tensorrt as trt
    import tensorrt.plugin as trtp

    ptx = ptx or compile_ptx
    floats, ints = npt.NDArray[np.float32], npt.NDArray[np.int32]
    outputs_type = Tuple[trtp.TensorDesc]  # noqa: UP006
    aot_return = Tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]  # noqa: UP006

    def eca_desc(
        x: trtp.TensorDesc, weights: floats, bias: floats, padding: ints, gate: ints, activation: ints
    ) -> trtp.TensorDesc:
        return x.like()

    def eca_autotune(x: trtp.TensorDesc, outputs: outputs_type) -> List[trtp.AutoTuneCombination]:  # noqa: UP006
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16", "LINEAR")]

    def eca_aot_impl(
        x: trtp.TensorDesc,
        weights: floats,
        bias: floats,
        padding: ints,
        gate: ints,
        activation: ints,
        outputs: outputs_type,
        tactic: int,
    ) -> aot_return:
        dims = x.shape_expr
        if x.ndim != 4 or not dims[1].is_constant:
            raise EcaDeployError("the ahead-of-time ECA plugin needs a 4-D NCHW input with a fixed channel count")
        channels = int(dims[1].constant_value())
        w = [float(v) for v in np.asarray(weights, dtype=np.float32).reshape(-1)]
        launch = qdp_launch(
            "float16" if x.dtype == trt.float16 else "float32",
            dims[0],
            channels,
            dims[2] * dims[3],
            w,
            _one(bias, "bias"),
            _one(padding, "padding"),
            _one(gate, "gate"),
            _one(activation, "activation"),
        )
        extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(v) for v in launch.arguments])
        params = trtp.KernelLaunchParams()
        params.grid_x = trtp.SymInt32(launch.grid_x)
        params.block_x = launch.block_x
        params.shared_mem = launch.shared_mem
        return launch.kernel.encode(), ptx().encode(), params, extra

    trtp.register(PLUGIN_ID)(eca_desc)
    trtp.autotune(PLUGIN_ID)(eca_autotune)
    trtp.aot_impl(PLUGIN_ID)(eca_aot_impl)


def has_entry_points(ptx: str) -> bool:
    """Whether `ptx` defines both kernels of the ahead-of-time plugin."""
    return all(f".entry {name}(" in ptx for name in KERNELS.values())


def entry_points(ptx: str) -> list[str]:
    """Every kernel entry point `ptx` defines."""
    return re.findall(r"\.entry\s+(\w+)\s*\(", ptx)


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
    from eca_deploy.ops.onnx_function import node_attributes

    nodes = [n for n in model.graph.node if is_eca_node(n)]
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


def aot_attributes(values: dict[str, Any]) -> dict[str, Any]:
    """The node attributes of the register signature, as arrays: weights, bias [b], and the enums as [code]."""
    out = dict(values)
    out["bias"] = [float(values.get("bias", 0.0))]
    for name, allowed in ENUMS.items():
        out[name] = [enum_code(name, values.get(name, allowed[0]))]
    return out


def prepare_for_aot(model: Any) -> Any:
    """A copy of `model` whose ECA nodes name this plugin: namespace AOT_NAMESPACE, version "1", no field_set, and
    every attribute of the register signature written out as an array (aot_attributes); a one-line EcaDeployError for
    nodes it cannot run."""
    import onnx
    from onnx import helper

    from eca_deploy.ops.onnx_function import node_attributes

    reason = aot_refusal(model)
    if reason is not None:
        raise EcaDeployError(reason)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for node in copy.graph.node:
        if node.domain != ECA_DOMAIN or node.op_type != ECA_OP_TYPE:
            continue
        values = aot_attributes(node_attributes(node).node_attributes())
        values.update(plugin_namespace=AOT_NAMESPACE, plugin_version=AOT_VERSION)
        dropped = {ECA_FIELD_SET_ATTR, *values}
        keep = [a for a in node.attribute if a.name not in dropped]
        del node.attribute[:]
        node.attribute.extend(keep)
        node.attribute.extend(helper.make_attribute(name, value) for name, value in values.items())
    return copy


def compiler_version(use: str | None = None) -> str | None:
    """The version of the PTX compiler `use` ('nvcc' | 'nvrtc', default compiler()), e.g. '12.6'; None: none."""
    use = use or compiler()
    if use == "nvcc":
        out = subprocess.run([find_nvcc(), "--version"], capture_output=True, text=True, check=False).stdout
        found = [line.split("release", 1)[1].split(",")[0].strip() for line in out.splitlines() if "release" in line]
        return found[0] if found else None
    if use == "nvrtc" and (nvrtc := _nvrtc()) is not None:
        err, major, minor = nvrtc.nvrtcVersion()
        return f"{major}.{minor}" if int(err) == 0 else None
    return None
