"""OpenVINO runner (CPU): ONNX models, fused ones through the ECA extension (plugins/openvino), loaded automatically."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from eca_deploy.backends.base import Runner, StepOptions, StepTimes, TensorInfo
from eca_deploy.errors import EcaDeployError, MissingDependencyError
from eca_deploy.exporters.metadata import ModelMetadata, metadata_from_props
from eca_deploy.ops import has_eca_nodes
from eca_deploy.plugin.openvino_build import find_openvino_extension

# OpenVINO element types -> the ONNX-style type strings the other runners report.
_TYPES = {"f32": "tensor(float)", "f16": "tensor(float16)", "i64": "tensor(int64)", "i32": "tensor(int32)"}
# INFERENCE_PRECISION_HINT values; None lets OpenVINO choose (bf16 on CPUs with AVX512_BF16 or AMX).
PRECISIONS = ("f32", "bf16", "f16")
# How the extension converts eca_deploy.ECA nodes (plugins/openvino/eca_extension.cpp): its fused CPU op, or
# OpenVINO's standard ops. Read by the extension from this variable while the model is read.
LOWERINGS = ("op", "opset")
LOWERING_ENV = "ECA_DEPLOY_OPENVINO_LOWERING"
# The conversion used when nothing says otherwise (neither `eca_lowering` nor the variable): the one closest to
# the fastest in the measurements of docs/openvino.md. `bench` and `deploy` measure instead (bench --lowering auto).
DEFAULT_LOWERING = "opset"


def import_openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise MissingDependencyError("OpenVINO is not installed: pip install 'eca-deploy[openvino]'") from None
    return openvino


class OpenVINORunner(Runner):
    """A compiled OpenVINO model with one infer request.

    `inference_precision` is OpenVINO's INFERENCE_PRECISION_HINT: "f32" (default: the numbers of the ONNX model),
    "bf16"/"f16", or None for OpenVINO's own pick. `extension` is the ECA extension library (default: found like
    `find_openvino_extension`); it is required only when the model holds eca_deploy.ECA nodes. `batch` fixes the
    batch dimension of a dynamic model. `perf_counters` turns on OpenVINO's per-layer profiling. `eca_lowering`
    "op" (the extension's fused kernel) or "opset" (OpenVINO's own ops) overrides $ECA_DEPLOY_OPENVINO_LOWERING,
    which overrides DEFAULT_LOWERING; `self.eca_lowering` is the one used (None for a model without ECA nodes).
    """

    name = "openvino"
    provider = "cpu"

    def __init__(
        self,
        model: str | Path | bytes,
        *,
        threads: int | None = None,
        inference_precision: str | None = "f32",
        extension: str | Path | None = None,
        batch: int | None = None,
        perf_counters: bool = False,
        eca_lowering: str | None = None,
    ) -> None:
        ov = import_openvino()
        import onnx

        if eca_lowering is not None and eca_lowering not in LOWERINGS:
            raise EcaDeployError(f"unknown ECA lowering {eca_lowering!r}: choose {', '.join(LOWERINGS)}")
        if inference_precision is not None and inference_precision not in PRECISIONS:
            raise EcaDeployError(f"unknown OpenVINO precision {inference_precision!r}: choose {', '.join(PRECISIONS)}")
        label = "the model" if isinstance(model, bytes) else str(model)
        if isinstance(model, bytes):
            proto = onnx.load_from_string(model)
        else:
            proto = onnx.load(str(model), load_external_data=False)
        self.metadata_props = {p.key: p.value for p in proto.metadata_props}  # the model's description
        self.core = ov.Core()
        self.extension = find_openvino_extension(extension, required=False)
        if has_eca_nodes(proto) and self.extension is None:
            raise EcaDeployError(
                f"{label} holds fused eca_deploy.ECA nodes, which OpenVINO runs only with the ECA extension: build it "
                "with `eca-deploy plugin build --target openvino` (or set ECA_DEPLOY_OPENVINO_EXTENSION), or run the "
                "unfused model.onnx"
            )
        if self.extension is not None:
            try:
                self.core.add_extension(str(self.extension))
            except RuntimeError as exc:
                version = ov.__version__.split("-")[0]
                raise EcaDeployError(
                    f"OpenVINO {version} cannot load {self.extension} ({_first_line(exc)}): rebuild it with "
                    "`eca-deploy plugin build --target openvino`"
                ) from None
        lowering = eca_lowering or os.environ.get(LOWERING_ENV) or DEFAULT_LOWERING
        self.eca_lowering = lowering if has_eca_nodes(proto) else None
        try:
            with scoped_env(LOWERING_ENV, lowering):
                ov_model = self.core.read_model(io.BytesIO(model) if isinstance(model, bytes) else str(model))
            if batch is not None:
                ov_model.reshape({ov_model.inputs[0].get_any_name(): _with_batch(ov_model.inputs[0], batch)})
            config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
            if inference_precision is not None:
                config["INFERENCE_PRECISION_HINT"] = inference_precision
            if threads:
                config["INFERENCE_NUM_THREADS"] = threads
            if perf_counters:
                config["PERF_COUNT"] = True
            self.compiled = self.core.compile_model(ov_model, "CPU", config)
        except RuntimeError as exc:
            raise EcaDeployError(f"OpenVINO cannot load {label}: {_first_line(exc)}") from None
        self.request = self.compiled.create_infer_request()
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.inference_precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))

    @staticmethod
    def _info(ports: Any) -> list[TensorInfo]:
        infos = []
        for port in ports:
            dims = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
            infos.append(TensorInfo(port.get_any_name(), dims, _TYPES.get(port.get_element_type().get_type_name(), "")))
        return infos

    @property
    def inputs(self) -> list[TensorInfo]:
        return self._info(self.compiled.inputs)

    @property
    def metadata(self) -> ModelMetadata | None:
        return metadata_from_props(self.metadata_props, self.outputs)

    def settings(self) -> dict[str, Any]:
        """The precision hint and threads OpenVINO compiled with, and the conversion of its ECA nodes (if any)."""
        chosen = {"inference_precision": self.inference_precision, "threads": self.threads,
                  "eca_lowering": self.eca_lowering}  # fmt: skip
        return {k: v for k, v in chosen.items() if v is not None}

    @property
    def outputs(self) -> list[TensorInfo]:
        return self._info(self.compiled.outputs)

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.request.infer(dict(feed))
        return {port.get_any_name(): np.array(value, copy=True) for port, value in results.items()}

    def make_step(self, feed: Mapping[str, np.ndarray], options: StepOptions) -> Callable[[], StepTimes | None]:
        """One synchronous infer with the inputs bound once and shared, outputs not copied."""
        request, bound = self.request, {k: np.ascontiguousarray(v) for k, v in feed.items()}

        def step() -> None:
            request.infer(bound, share_inputs=True, share_outputs=True)

        return step

    def profile(self) -> list[dict[str, Any]]:
        """Per-layer counters of the last inference (needs `perf_counters=True`): name, type, exec type, ms."""
        rows = []
        for info in self.request.profiling_info:
            if info.status != info.Status.EXECUTED:
                continue
            rows.append(
                {
                    "name": info.node_name,
                    "type": info.node_type,
                    "exec_type": info.exec_type,
                    "ms": info.real_time.total_seconds() * 1e3,
                }
            )
        return rows


@contextlib.contextmanager
def scoped_env(name: str, value: str | None) -> Iterator[None]:
    """Set an environment variable for the duration of the block (no change when `value` is None)."""
    if value is None:
        yield
        return
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _with_batch(port: Any, batch: int) -> Any:
    shape = port.get_partial_shape()
    shape[0] = batch
    return shape


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return ((useful or lines or [type(exc).__name__])[0])[:200]
