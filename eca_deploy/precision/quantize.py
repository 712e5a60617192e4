"""INT8 post-training quantization of an FP32 ONNX model into a Q/DQ model laid out for TensorRT."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from eca_deploy.data.images import Preprocessing
from eca_deploy.errors import EcaDeployError, SettingError
from eca_deploy.exporters.metadata import onnx_interface
from eca_deploy.fusion import count_eca_nodes
from eca_deploy.precision import DEFAULT_METHOD
from eca_deploy.precision.calibration import (
    MEMORY_BUDGET,
    METHODS,
    MIN_RECOMMENDED_IMAGES,
    CalibrationCache,
    cache_dir,
    cache_key,
    collect_ranges,
    load_calibration_set,
    plan_calibration,
)
from eca_deploy.precision.detect import detect_precision
from eca_deploy.precision.qdq import insert_qdq, plan_quantization, qdq_summary


@dataclass(frozen=True)
class QuantizeOptions:
    method: str = DEFAULT_METHOD
    count: int = 512
    quantize_eca_gate: bool = False  # for comparison only: the gate belongs in float
    use_cache: bool = True
    cache_folder: Path | None = None  # default: calibration.cache_dir()
    memory_budget: int = MEMORY_BUDGET  # bytes of activations a calibration run may hold (sets groups and batch)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise SettingError(f"unknown calibration method {self.method!r} ({{method}}): one of {', '.join(METHODS)}")
        if self.count < 1:
            raise SettingError(f"{{calib_count}} must be a positive number of images, got {self.count}")
        if self.memory_budget < 1 << 20:
            raise EcaDeployError(
                f"the calibration memory budget must be at least 1 MiB, not {self.memory_budget} bytes"
            )


@dataclass
class QuantizeReport:
    method: str
    images: int
    found: int
    skipped: list[str]
    source: str  # "calibrated" or "cache"
    cache_file: str | None
    qdq: dict[str, int]
    eca_blocks_unfused: int
    eca_nodes_fused: int
    eca_gate_quantized: bool
    decoding_nodes_float: int = 0  # a detection head's decoding, kept in float (qdq.decoding_nodes)
    calibration: dict[str, Any] | None = None  # how the images were streamed (None when the cache served)
    warnings: list[str] = field(default_factory=list)
    preprocessing: str = ""  # Preprocessing.describe() of the calibration images

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def model_preprocessing(
    model: onnx.ModelProto, warn: Callable[[str], None], img_size: tuple[int, int] | None = None
) -> Preprocessing:
    """The preprocessing of the model's interface: its metadata's, else ImageNet's (said aloud), at its size (or
    `img_size`)."""
    return onnx_interface(model, label="the model", img_size=img_size, warn=warn).preprocessing


def quantize_model(
    model: onnx.ModelProto,
    calib_images: Path,
    onnx_sha256: str,
    options: QuantizeOptions = QuantizeOptions(),
    warn: Callable[[str], None] = lambda _m: None,
    progress: Callable[[int, int], None] | None = None,
    preprocessing: Preprocessing | None = None,
) -> tuple[onnx.ModelProto, QuantizeReport]:
    """Calibrate `model` on the images in `calib_images` (or reuse cached ranges) and insert Q/DQ nodes.

    `preprocessing` (default: the model's interface) is the one the verification uses too: same size.
    """
    options.validate()
    precision = detect_precision(model)
    if precision != "fp32":
        raise EcaDeployError(f"the model is already {precision.upper()}: quantize the FP32 model it came from")
    prep = preprocessing or model_preprocessing(model, warn)
    calib = load_calibration_set(calib_images, prep, options.count)
    warnings: list[str] = []
    if calib.skipped:
        warnings.append(f"skipped {len(calib.skipped)} unreadable image files: {', '.join(calib.skipped[:5])}")
    used = len(calib)
    if used < MIN_RECOMMENDED_IMAGES:
        warnings.append(
            f"only {used} calibration images: INT8 ranges from so few are unreliable and can collapse accuracy; "
            f"use at least {MIN_RECOMMENDED_IMAGES} (better 500) real images like those the model will see"
        )
    if options.quantize_eca_gate and count_eca_nodes(model):
        warnings.append(
            "fused ECA nodes run their gate in float in the plugin: --quantize-eca-gate affects none of them"
        )
    for message in warnings:
        warn(message)

    # Calibrate every candidate tensor (gate included), so one cache entry serves both layouts.
    full_plan = plan_quantization(model, quantize_eca_gate=True)
    plan = plan_quantization(model, quantize_eca_gate=options.quantize_eca_gate)
    tensors = sorted(full_plan.activations)
    cache = CalibrationCache(options.cache_folder or cache_dir())
    key = cache_key(onnx_sha256, calib.files, options.method, options.count, prep)
    ranges = cache.load(key, tensors) if options.use_cache else None
    source, cache_file = "cache", str(cache.path(key))
    streaming = None
    if ranges is None:
        source = "calibrated"
        stream = plan_calibration(model, tensors, used, options.method, options.memory_budget)
        streaming = {
            "groups": len(stream.groups),
            "batch": sorted({g.batch for g in stream.groups}),
            "passes": stream.passes,
            "memory_budget_mib": options.memory_budget >> 20,
        }
        ranges = collect_ranges(model, tensors, calib, options.method, progress=progress, plan=stream)
        info = {
            "onnx_sha256": onnx_sha256,
            "method": options.method,
            "count": options.count,
            "images": [p.name for p in calib.files],
        }
        written = cache.store(key, ranges, info) if options.use_cache else None
        cache_file = str(written) if written else None
    quantized = insert_qdq(model, plan, ranges)
    report = QuantizeReport(
        method=options.method,
        images=used,
        found=calib.found,
        skipped=calib.skipped,
        source=source,
        cache_file=cache_file,
        qdq=qdq_summary(quantized),
        eca_blocks_unfused=plan.eca_blocks,
        eca_nodes_fused=count_eca_nodes(model),
        eca_gate_quantized=plan.eca_gate_quantized,
        decoding_nodes_float=plan.decoding_nodes,
        calibration=streaming,
        warnings=warnings,
        preprocessing=prep.describe(),
    )
    return quantized, report
