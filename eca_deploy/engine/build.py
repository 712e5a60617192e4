"""Compile an ONNX model into a TensorRT engine with the Python API that TensorRT 10.x (10.3+) and 11.x share.

Every network is strongly typed: the ONNX decides the precision (float32, float16 types, Q/DQ nodes), which
is the only route TensorRT 11 has and gives 10.x the same engine for the same file. The builder adds one
optimisation profile for the dynamic batch, a timing cache that is read and updated, build progress through
IProgressMonitor, DLA options for Jetson and version-compatible engines with the plugin embedded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from eca_deploy.engine.plugin import check_model_nodes, load_and_check, require_current
from eca_deploy.engine.trt_import import create_builder, import_tensorrt
from eca_deploy.environment import gpu_info
from eca_deploy.errors import EcaDeployError, SettingError
from eca_deploy.fileio import atomic_write_bytes
from eca_deploy.plugin.locate import plugin_vc_library
from eca_deploy.plugin.qdp import MIN_TENSORRT_TEXT, PLUGIN_ID, register


@dataclass(frozen=True)
class Profile:
    """Batch sizes of the one optimisation profile: min <= opt <= max."""

    min: int = 1
    opt: int = 8
    max: int = 32

    @classmethod
    def parse(cls, text: str) -> Profile:
        """'1:8:32' or 'N' (a fixed batch)."""
        parts = text.split(":")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise SettingError(f"{{profile}} takes min:opt:max such as 1:8:32 (or one size), got {text!r}") from None
        if len(values) == 1:
            values *= 3
        if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2]:
            raise SettingError(f"{{profile}} needs 1 <= min <= opt <= max, as in 1:8:32, got {text!r}")
        return cls(*values)


@dataclass(frozen=True)
class BuildOptions:
    profile: Profile = Profile()
    img_size: tuple[int, int] | int | None = None  # (H, W), or N for N x N: for models whose H, W are dynamic
    workspace: int | None = None  # bytes; None: TensorRT's default (the device memory)
    timing_cache: Path | None = None
    replace_foreign_cache: bool = False  # the default (keyed) cache file: replace one TensorRT refuses
    dla_core: int | None = None
    gpu_fallback: bool = False
    version_compatible: bool = False
    plugin: Path | None = None  # the ECA plugin library (None: no ECA nodes, --plugin off, or the AOT plugin)
    aot: bool = False  # the ECA nodes (rewritten by qdp.prepare_for_aot) are served by the ahead-of-time plugin
    eca_nodes: int = 0  # fused ECA nodes the network must turn into plugin layers


@dataclass
class BuiltEngine:
    data: bytes
    profile: dict[str, list[list[int]]]
    layers: int | None
    layers_per_precision: dict[str, int] | None
    eca_plugin_layers: int
    eca_residual_layers: int  # of those, the ones that take the block's residual (two inputs)
    seconds: float
    tensorrt_version: str
    timing_cache: Path | None
    timing_cache_status: str  # "new", "loaded", "mismatch" (another GPU or TensorRT: not used) or "none"


def check_dla(opts: BuildOptions) -> None:
    """DLA needs a fixed batch: it has no dynamic dimensions (TensorRT would run every layer on the GPU instead)."""
    if opts.dla_core is None:
        return
    p = opts.profile
    if not p.min == p.opt == p.max:
        raise SettingError(
            f"{{dla_core}} needs one fixed batch size (DLA supports no dynamic dimensions), got {{profile}} "
            f"{p.min}:{p.opt}:{p.max}: pass {{profile}} N, e.g. {{profile}} {p.opt}"
        )
    if opts.eca_nodes and not opts.gpu_fallback:
        raise EcaDeployError(
            f"--dla-core without --gpu-fallback cannot build this model: DLA runs no plugins and it has "
            f"{opts.eca_nodes} ECA plugin layers; add --gpu-fallback, or build with --plugin off"
        )


def parse_size(text: str) -> int:
    """'2G', '512M', '1048576' -> bytes."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if scale > 1 else t) * scale
    except ValueError:
        raise EcaDeployError(f"--workspace takes a size such as 2G or 512M, got {text!r}") from None
    if value <= 0:
        raise EcaDeployError(f"--workspace must be positive, got {text!r}")
    return int(value)


def _progress_monitor(trt: Any, report: Callable[[str, int, int], None]) -> Any:
    """An IProgressMonitor that forwards (phase, step, steps) to `report` (None where TensorRT lacks it)."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.steps: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.steps[phase_name] = num_steps
            report(phase_name, 0, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            report(phase_name, step + 1, self.steps.get(phase_name, 0))
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            report(phase_name, self.steps.get(phase_name, 0), self.steps.get(phase_name, 0))

    return Monitor()


def parse_error_hint(first: str, aot: bool) -> str:
    """What to do about the parser's first error when it concerns the ECA plugin ('' otherwise), per route."""
    if "ECA" not in first and "plugin" not in first.lower():
        return ""
    if aot:
        return (
            f": TensorRT's ONNX parser did not reach the ahead-of-time plugin {PLUGIN_ID} (it needs TensorRT >= "
            f"{MIN_TENSORRT_TEXT}; `eca-deploy plugin info` says why not here), or use --plugin off"
        )
    return ": the ECA plugin library is missing or built for another TensorRT (--plugin PATH, or --plugin off)"


def _parse(trt: Any, network: Any, logger: Any, model: onnx.ModelProto, aot: bool = False) -> Any:
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.SerializeToString()):
        errors = [str(parser.get_error(i).desc()).strip() for i in range(parser.num_errors)]
        first = errors[0].splitlines()[0][:200] if errors else "unknown error"
        raise EcaDeployError(f"TensorRT's ONNX parser rejected the model: {first}{parse_error_hint(first, aot)}")
    return parser


def _plugin_layers(trt: Any, network: Any) -> tuple[int, int]:
    """Plugin layers of the network, and how many of them take two inputs (the ECA op with its residual)."""
    kinds = {getattr(trt.LayerType, n) for n in ("PLUGIN_V3", "PLUGIN_V2", "PLUGIN") if hasattr(trt.LayerType, n)}
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    plugins = [layer for layer in layers if layer.type in kinds]
    return len(plugins), sum(1 for layer in plugins if layer.num_inputs == 2)


def _set_profile(trt: Any, builder: Any, network: Any, config: Any, opts: BuildOptions) -> dict[str, list[list[int]]]:
    profile = builder.create_optimization_profile()
    shapes: dict[str, list[list[int]]] = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = list(tensor.shape)
        if len(dims) != 4:
            raise EcaDeployError(f"input {tensor.name!r} has shape {dims}: eca-deploy engines take [N, 3, H, W]")
        h, w = dims[2], dims[3]
        size = (opts.img_size, opts.img_size) if isinstance(opts.img_size, int) else opts.img_size
        if h < 0 or w < 0:
            if size is None:
                raise EcaDeployError(f"input {tensor.name!r} has a dynamic image size: pass --img-size")
            h, w = size
        elif size is not None and (h, w) != size:
            raise EcaDeployError(f"the model takes {h}x{w} images, not --img-size {size[0]}x{size[1]}: drop --img-size")
        p = opts.profile
        if dims[0] >= 0 and (p.min, p.opt, p.max) != (dims[0],) * 3:
            raise SettingError(
                f"the model has a fixed batch of {dims[0]}: pass {{profile}} {dims[0]} or export with --batch-dim "
                "dynamic"
            )
        batches = (p.min, p.opt, p.max)
        chosen = [[b, dims[1], h, w] for b in batches]
        profile.set_shape(tensor.name, *[tuple(s) for s in chosen])
        shapes[tensor.name] = chosen
    config.add_optimization_profile(profile)
    return shapes


_INSPECT_IN_A_FRESH_PROCESS = """
import sys, tensorrt as trt
runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
runtime.engine_host_code_allowed = True
engine = runtime.deserialize_cuda_engine(open(sys.argv[1], "rb").read())
print(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
"""


def _engine_information(trt: Any, engine_bytes: bytes, logger: Any, opts: BuildOptions) -> dict | None:
    """The engine inspector's JSON (None where unavailable).

    A version-compatible plan carries the lean runtime, so deserializing it needs engine host code allowed
    (the plan was built just now, by this process). One that also carries the plugin library is inspected in a
    fresh process: here the plugin is registered already, and the carried copy would clash with it.
    """
    try:
        if opts.version_compatible and opts.plugin is not None:
            with tempfile.TemporaryDirectory() as tmp:
                plan = Path(tmp) / "engine.plan"
                plan.write_bytes(engine_bytes)
                done = subprocess.run(
                    [sys.executable, "-c", _INSPECT_IN_A_FRESH_PROCESS, str(plan)],
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=600,
                )
            return json.loads(done.stdout) if done.returncode == 0 else None
        runtime = trt.Runtime(logger)
        if opts.version_compatible:
            runtime.engine_host_code_allowed = True
        engine = runtime.deserialize_cuda_engine(engine_bytes)
        inspector = engine.create_engine_inspector()
        return json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    except Exception:  # the inspector is a report, never a reason to fail a build
        return None


def _layer_precisions(info: dict | None) -> tuple[int | None, dict[str, int] | None]:
    """Layer count and layers per precision from the engine inspector's JSON (None where unavailable)."""
    if not isinstance(info, dict):
        return None, None
    layers = info.get("Layers", [])
    counts: Counter[str] = Counter()
    for layer in layers:
        if not isinstance(layer, dict):
            return len(layers), None
        formats = " ".join(
            str(t.get("Format/Datatype", "")) for t in layer.get("Inputs", []) + layer.get("Outputs", [])
        )
        upper = formats.upper()
        if "INT8" in upper:
            counts["int8"] += 1
        elif "FP16" in upper or "HALF" in upper:
            counts["fp16"] += 1
        elif "FP8" in upper:
            counts["fp8"] += 1
        else:
            counts["fp32"] += 1
    return len(layers), dict(counts)


def _attach_timing_cache(
    config: Any, path: Path | None, log: Callable[[str], None], replace: bool = False
) -> tuple[Any, str]:
    """Create the config's timing cache from `path` when it exists and was made on this GPU and TensorRT version.

    The cache is attached with ignore_mismatch=False: TensorRT's header warns that a cache from a device with
    other properties "may lead to functional/performance bugs". A cache it refuses is not used; the file is left
    alone, or with `replace` (eca-deploy's own default file) replaced after the build.
    """
    data = path.read_bytes() if path is not None and path.is_file() else b""
    status = "loaded" if data else "new"
    cache = config.create_timing_cache(data) if data else None
    if cache is not None and not config.set_timing_cache(cache, ignore_mismatch=False):
        cache, status = None, "mismatch"
    elif cache is None and data:
        status = "mismatch"  # not a timing cache of this TensorRT version
    if status == "mismatch":
        fate = "replaced by this build's" if replace else "left unchanged"
        log(f"the timing cache {path} was made by another GPU or TensorRT version: not used, and {fate}")
    if cache is None:
        cache = config.create_timing_cache(b"")
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
            raise EcaDeployError("TensorRT could not create a timing cache (see the TensorRT messages above)")
    return cache, status


def build_engine(
    model: onnx.ModelProto,
    opts: BuildOptions,
    progress: Callable[[str, int, int], None] | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> BuiltEngine:
    """Parse `model` (fused ECA functions already stripped), check the plugin layers, build and serialise."""
    check_dla(opts)
    if opts.aot and (opts.plugin is not None or opts.version_compatible):
        raise EcaDeployError("the AOT plugin builds neither with a plugin library nor version-compatible engines")
    if opts.plugin is not None:
        check_model_nodes(model)
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = create_builder(trt, logger)
    if opts.plugin is not None:
        load_and_check(trt, opts.plugin)
    if opts.aot:
        register()  # before the parser looks up eca_deploy_aot::ECA
    flags = 0
    strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly is not None:  # 10.x: opt in; 11.x: every network is strongly typed
        flags |= 1 << int(strongly)
    network = builder.create_network(flags)
    _parser = _parse(trt, network, logger, model, opts.aot)  # the parser must outlive the build (it owns the weights)
    plugin_layers, residual_layers = _plugin_layers(trt, network)
    if plugin_layers != opts.eca_nodes:
        fix = (
            f"TensorRT {MIN_TENSORRT_TEXT} or newer parses nodes for the AOT plugin"
            if opts.aot
            else "rebuild the plugin for this TensorRT"
        )
        raise EcaDeployError(
            f"the network has {plugin_layers} plugin layers for {opts.eca_nodes} fused ECA nodes: the parser did not "
            f"map every ECA node to the plugin ({fix}, or use --plugin off)"
        )
    config = builder.create_builder_config()
    if opts.workspace:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace)
    if hasattr(trt, "ProfilingVerbosity"):
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer precisions for the inspector
    shapes = _set_profile(trt, builder, network, config, opts)
    # the cache must stay alive until the build ends
    _timing_cache, cache_status = _attach_timing_cache(config, opts.timing_cache, log, opts.replace_foreign_cache)
    if opts.dla_core is not None:
        if builder.num_DLA_cores == 0:
            raise EcaDeployError("--dla-core needs a device with DLA cores (Jetson AGX/NX Orin, Xavier): none found")
        if not 0 <= opts.dla_core < builder.num_DLA_cores:
            raise EcaDeployError(
                f"--dla-core {opts.dla_core}: this device has DLA cores 0..{builder.num_DLA_cores - 1}"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = opts.dla_core
        if opts.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        if opts.eca_nodes:
            log("the ECA plugin runs on the GPU: with DLA, every ECA layer is a DLA<->GPU transition")
    if opts.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        if opts.plugin is not None:  # the engine carries the plugin, in the form TensorRT's loader takes
            carried = plugin_vc_library(opts.plugin)
            require_current(carried)
            config.plugins_to_serialize = [str(carried)]
    if progress is not None:
        monitor = _progress_monitor(trt, progress)
        if monitor is not None and hasattr(config, "progress_monitor"):
            config.progress_monitor = monitor
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise EcaDeployError("TensorRT failed to build the engine (see the TensorRT messages above)")
    data = bytes(serialized)
    if opts.timing_cache is not None and (cache_status != "mismatch" or opts.replace_foreign_cache):
        opts.timing_cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(opts.timing_cache, bytes(config.get_timing_cache().serialize()))
    layers, per_precision = _layer_precisions(_engine_information(trt, data, logger, opts))
    return BuiltEngine(
        data,
        shapes,
        layers,
        per_precision,
        plugin_layers,
        residual_layers,
        seconds,
        str(trt.__version__),
        opts.timing_cache,
        cache_status if opts.timing_cache is not None else "none",
    )


def cuda_and_gpu() -> dict[str, str | None]:
    """CUDA runtime version, GPU name and compute capability (best effort: cuda-python, pycuda, nvidia-smi)."""
    info: dict[str, str | None] = {"cuda_version": None, "gpu_name": None, "compute_capability": None}
    try:
        try:
            from cuda.bindings import runtime as rt
        except ImportError:
            from cuda import cudart as rt  # type: ignore[no-redef]
        err, version = rt.cudaRuntimeGetVersion()
        if int(err) == 0:
            info["cuda_version"] = f"{version // 1000}.{(version % 1000) // 10}"
        err, props = rt.cudaGetDeviceProperties(0)
        if int(err) == 0:
            name = props.name
            info["gpu_name"] = (name.decode() if isinstance(name, bytes) else str(name)).rstrip("\x00")
            info["compute_capability"] = f"{props.major}.{props.minor}"
        return info
    except Exception:  # not there or no device: try the next source
        pass
    try:
        import pycuda.autoprimaryctx  # noqa: F401  (the primary context: the one TensorRT uses)
        import pycuda.driver as cuda

        info["cuda_version"] = ".".join(map(str, cuda.get_version()[:2]))
        device = cuda.Device(0)
        info["gpu_name"] = device.name()
        info["compute_capability"] = "{}.{}".format(*device.compute_capability())
        return info
    except Exception:  # not there or no device: try nvidia-smi
        pass

    gpu = gpu_info()
    if gpu:
        info["gpu_name"], info["compute_capability"] = gpu.get("name"), gpu.get("compute_capability")
    return info
