"""`build`: ONNX -> TensorRT engine + sidecar. Precision and ECA fusion are settled in ONNX first, on the CPU."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from eca_deploy.engine.build import BuildOptions, Profile, build_engine, check_dla, cuda_and_gpu
from eca_deploy.engine.plugin import PluginRoute, check_model_nodes, resolve_route
from eca_deploy.engine.sidecar import Sidecar, write_sidecar
from eca_deploy.engine.trt_import import import_tensorrt
from eca_deploy.errors import EcaDeployError, SettingError
from eca_deploy.exporters.metadata import PREFIX
from eca_deploy.fileio import atomic_write_bytes, claim_output_file, file_in_the_way, sha256_file
from eca_deploy.fusion import count_eca_nodes, fuse_eca, strip_eca_functions
from eca_deploy.onnx_io import load_onnx, save_onnx
from eca_deploy.ops import ECA_DOMAIN
from eca_deploy.pipeline.convert import convert_model
from eca_deploy.plugin import qdp
from eca_deploy.plugin.qdp import aot_refusal
from eca_deploy.precision.calibration import cache_dir
from eca_deploy.precision.detect import detect_precision
from eca_deploy.precision.quantize import QuantizeOptions, quantize_model
from eca_deploy.version import __version__

AOT_NOT_VERSION_COMPATIBLE = (
    "--version-compatible with the AOT plugin is not supported: a version-compatible engine carries its plugin as "
    "the C++ library TensorRT's lean runtime loads; build without --version-compatible, or build the C++ plugin"
)


@dataclass
class BuildRequest:
    onnx_path: Path
    output: Path
    fp16: bool = False
    int8: bool = False
    calib_images: Path | None = None
    quantize: QuantizeOptions = field(default_factory=QuantizeOptions)
    plugin: str = "auto"  # auto (library, else AOT) | aot | off | PATH
    profile: Profile = field(default_factory=Profile)
    img_size: tuple[int, int] | int | None = None  # (H, W), or N for N x N
    workspace: int | None = None
    timing_cache: Path | None = None
    dla_core: int | None = None
    gpu_fallback: bool = False
    version_compatible: bool = False

    def validate(self) -> None:
        if self.fp16 and self.int8:
            raise EcaDeployError(
                "--fp16 and --int8 together are not supported: an INT8 (Q/DQ) model keeps its other layers in FP32"
            )
        if self.calib_images is not None and not self.int8:
            raise SettingError("{calib_images} is for INT8: add {int8}")
        if self.gpu_fallback and self.dla_core is None:
            raise SettingError("{gpu_fallback} applies to DLA builds: add {dla_core} N")
        if self.dla_core is not None and self.dla_core < 0:
            raise SettingError(f"{{dla_core}} must be 0 or more, got {self.dla_core}")
        if self.dla_core is not None:
            check_dla(BuildOptions(profile=self.profile, dla_core=self.dla_core, gpu_fallback=self.gpu_fallback))
        if self.plugin == "aot" and self.version_compatible:
            raise EcaDeployError(AOT_NOT_VERSION_COMPATIBLE)

    def validate_model(self, model: onnx.ModelProto) -> None:
        """Checks that need the model (its structure only) and no TensorRT."""
        if self.plugin == "aot":
            reason = aot_refusal(_fused_copy(model, residual=False))
            if reason is not None:
                raise EcaDeployError(reason)
        if self.dla_core is None:
            return

        if not (self.fp16 or self.int8) and detect_precision(model) == "fp32":
            raise EcaDeployError(
                "--dla-core: DLA runs FP16 and INT8 layers only, and the network is built strongly typed (the "
                "ONNX's FP32 types are kept), so no layer would run on DLA: add --fp16 or --int8"
            )
        if not self.gpu_fallback and self.plugin != "off":
            eca = _eca_nodes_after_fusion(model)
            if eca:
                check_dla(BuildOptions(profile=self.profile, dla_core=self.dla_core, eca_nodes=eca))


def _eca_nodes_after_fusion(model: onnx.ModelProto) -> int:
    """ECA nodes the model has, or will have once its ECA blocks are fused (on a copy)."""
    return count_eca_nodes(model) or count_eca_nodes(_fused_copy(model))


def _fused_copy(model: onnx.ModelProto, residual: bool = True) -> onnx.ModelProto:
    """The model, or a copy with its ECA blocks fused as the build fuses them (unchanged where fusion fails)."""
    if count_eca_nodes(model):
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    try:
        fuse_eca(copy, residual=residual)
    except Exception:  # an unusual graph: the build reports what TensorRT makes of it
        return model
    return copy


@dataclass
class BuildResult:
    engine: Path
    sidecar: Path
    compiled_onnx: Path  # the ONNX the engine was compiled from (the source, or the FP16/INT8 file written)
    precision: str
    messages: list[str]
    details: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "engine": str(self.engine),
            "sidecar": str(self.sidecar),
            "onnx": str(self.compiled_onnx),
            "precision": self.precision,
            "messages": self.messages,
            **self.details,
        }


def unfuse(model: onnx.ModelProto) -> onnx.ModelProto:
    """Inline the ECA function: standard ops only, so no parser release can look for the plugin."""
    try:
        import onnx.inliner
    except ImportError:  # onnx < 1.16
        raise EcaDeployError(
            "--plugin off on a fused model needs onnx >= 1.16 (pip install -U onnx), or pass the unfused ONNX"
        ) from None
    inlined = onnx.inliner.inline_local_functions(model)
    keep = [o for o in inlined.opset_import if o.domain != ECA_DOMAIN]
    del inlined.opset_import[:]
    inlined.opset_import.extend(keep)
    return inlined


def default_timing_cache(tensorrt_version: str, gpu_name: str | None, compute_capability: str | None) -> Path:
    """One cache per TensorRT version and GPU: tactic timings hold for that pair only."""
    gpu = re.sub(r"[^a-z0-9]+", "-", (gpu_name or "unknown-gpu").lower()).strip("-") or "unknown-gpu"
    sm = "sm" + (compute_capability or "unknown").replace(".", "")
    return cache_dir().parent / "tensorrt" / f"timing-trt{tensorrt_version}-{gpu}-{sm}.cache"


def prepare_onnx(
    req: BuildRequest,
    say: Callable[[str], None],
    warn: Callable[[str], None],
    progress: Callable[[int, int], None] | None,
    residual: bool = True,
) -> tuple[onnx.ModelProto, Path, int]:
    """Fuse or unfuse ECA blocks (`residual`: with their residual Add), convert or quantize: the model to compile,
    its file, and its ECA node count."""
    model = load_onnx(req.onnx_path)
    compiled = req.onnx_path
    changed = False
    if req.plugin == "off":
        if count_eca_nodes(model):
            model = unfuse(model)
            changed = True
            say("--plugin off: the fused ECA nodes are expanded into standard ops (their ONNX function)")
    else:
        report = fuse_eca(model, residual=residual)
        if report.count:
            changed = True
            say(f"fused {report.count} unfused ECA blocks into ECA nodes (served by the plugin)")
    precision = detect_precision(model)
    stem = req.output.name.removesuffix(".plan").removesuffix(".engine")
    if req.fp16 and precision != "fp16":
        if precision == "int8":
            raise SettingError(f"{req.onnx_path} is an INT8 (Q/DQ) model: drop {{fp16}}, or pass the FP32 model")
        model, _ = convert_model(model, warn=warn)
        compiled = req.output.with_name(f"{stem}.fp16.onnx")
        save_onnx(model, compiled)
        say(f"wrote the FP16 ONNX {compiled} (runs in ONNX Runtime: check it with eca-deploy check --onnx)")
        changed = False
    if req.int8 and precision != "int8":
        if req.calib_images is None:
            raise EcaDeployError(
                f"{req.onnx_path} has no Q/DQ nodes: pass --calib-images DIR, or quantize it first with "
                "eca-deploy quantize"
            )
        model, qreport = quantize_model(
            model, req.calib_images, sha256_file(req.onnx_path), req.quantize, warn, progress
        )
        compiled = req.output.with_name(f"{stem}.int8.onnx")
        save_onnx(model, compiled)
        say(f"wrote the INT8 Q/DQ ONNX {compiled} (calibration: {qreport.source}, {qreport.images} images)")
        changed = False
    if changed:
        compiled = req.onnx_path  # fused/unfused in memory only; the file on disk stays as it was
    return model, compiled, count_eca_nodes(model)


def claim_build_outputs(req: BuildRequest) -> None:
    """The engine, its sidecar and (with --fp16/--int8) the ONNX compiled: writable, none an input."""
    inputs = [req.onnx_path, req.calib_images, req.timing_cache]
    cache = req.timing_cache  # read and updated; its missing folders are made
    if cache is not None and (cache.parent.exists() or file_in_the_way(cache) is not None):
        claim_output_file(cache, "--timing-cache", [req.onnx_path, req.calib_images], updates=True)
    claim_output_file(req.output, "--output", inputs)
    claim_output_file(req.output.with_name(req.output.name + ".json"), "--output (its sidecar)", inputs)
    stem = req.output.name.removesuffix(".plan").removesuffix(".engine")
    for wanted, suffix in ((req.fp16, "fp16"), (req.int8, "int8")):
        if wanted:
            claim_output_file(req.output.with_name(f"{stem}.{suffix}.onnx"), "--output (its ONNX)", inputs)


def run_build(
    req: BuildRequest,
    say: Callable[[str], None] = lambda _m: None,
    warn: Callable[[str], None] = lambda _m: None,
    calib_progress: Callable[[int, int], None] | None = None,
    build_progress: Callable[[str, int, int], None] | None = None,
) -> BuildResult:
    req.validate()
    header = load_onnx(req.onnx_path, load_external_data=False)  # a missing or broken file: one line
    req.validate_model(header)
    claim_build_outputs(req)
    trt = import_tensorrt()  # fail before any conversion work when TensorRT is missing
    gpu = cuda_and_gpu()
    try:  # before fusing: the AOT plugin takes no residual
        route, no_route = resolve_route(req.plugin), None
    except EcaDeployError as exc:  # an error only if the model has ECA nodes
        route, no_route = PluginRoute("none"), exc
    if route.kind == "aot" and req.plugin != "aot" and _eca_nodes_after_fusion(header):
        # `auto` found no library: what the AOT plugin refuses, before any conversion
        BuildRequest(req.onnx_path, req.output, plugin="aot", version_compatible=req.version_compatible).validate()
        BuildRequest(req.onnx_path, req.output, plugin="aot").validate_model(header)
    model, compiled, eca_nodes = prepare_onnx(req, say, warn, calib_progress, residual=route.kind != "aot")
    if not eca_nodes:
        route = PluginRoute("none")
    elif no_route is not None:
        raise no_route
    plugin, ptx = route.path, {}
    parsed = strip_eca_functions(model)
    if route.kind == "aot":
        check_model_nodes(model)  # fused for this eca-deploy's op contract
        parsed = qdp.prepare_for_aot(parsed)
        use = qdp.compiler()
        isa = qdp.ptx_isa(qdp.compile_ptx(use=use))
        ptx = {
            "ptx_compiler": use,
            "ptx_compiler_version": qdp.compiler_version(use),
            "ptx_arch": f"compute_{qdp.PTX_ARCH}",
            "ptx_isa": ".".join(map(str, isa)) if isa else None,
        }
        say(f"the {eca_nodes} ECA nodes are served by the ahead-of-time plugin {qdp.PLUGIN_ID} (PTX by {use})")
    opts = BuildOptions(
        profile=req.profile,
        img_size=req.img_size,
        workspace=req.workspace,
        timing_cache=req.timing_cache
        or default_timing_cache(str(trt.__version__), gpu["gpu_name"], gpu["compute_capability"]),
        replace_foreign_cache=req.timing_cache is None,
        dla_core=req.dla_core,
        gpu_fallback=req.gpu_fallback,
        version_compatible=req.version_compatible,
        plugin=plugin,
        eca_nodes=eca_nodes,
        aot=route.kind == "aot",
    )
    start = time.perf_counter()
    built = build_engine(parsed, opts, build_progress, say)
    atomic_write_bytes(req.output, built.data)
    precision = detect_precision(model)
    props = {p.key[len(PREFIX) :]: p.value for p in model.metadata_props if p.key.startswith(PREFIX)}
    sidecar = Sidecar(
        tensorrt_version=built.tensorrt_version,
        precision=precision,
        profile=built.profile,
        onnx_sha256=sha256_file(compiled),
        onnx_path=str(compiled),
        build_seconds=round(time.perf_counter() - start, 2),
        eca_deploy_version=__version__,
        **gpu,
        plugin_path=str(plugin) if plugin else None,
        plugin_sha256=sha256_file(plugin) if plugin else None,
        plugin_route=route.kind if route.kind != "none" else None,
        **ptx,
        eca_plugin_layers=built.eca_plugin_layers,
        eca_residual_layers=built.eca_residual_layers,
        layers=built.layers,
        layers_per_precision=built.layers_per_precision,
        version_compatible=req.version_compatible,
        dla_core=req.dla_core,
        gpu_fallback=req.gpu_fallback,
        workspace_bytes=req.workspace,
        timing_cache=str(built.timing_cache) if built.timing_cache else None,
        timing_cache_status=built.timing_cache_status,
        input_metadata=props,
    )
    sidecar_file = write_sidecar(req.output, sidecar)
    return BuildResult(req.output, sidecar_file, compiled, precision, [], sidecar.as_dict())
