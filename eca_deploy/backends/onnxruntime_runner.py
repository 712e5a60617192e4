"""ONNX Runtime runner; works with either the `onnxruntime` or the `onnxruntime-gpu` wheel."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eca_deploy.backends.base import Runner, StepOptions, StepTimes, TensorInfo
from eca_deploy.backends.onnxruntime_layout import nchwc_model
from eca_deploy.errors import EcaDeployError, MissingDependencyError
from eca_deploy.exporters.metadata import ModelMetadata, metadata_from_props
from eca_deploy.ops import has_eca_nodes
from eca_deploy.plugin.onnxruntime_build import find_onnxruntime_op, register

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError(
            "ONNX Runtime is not installed: pip install 'eca-deploy[cpu]' (or '[gpu]' for onnxruntime-gpu)"
        ) from None
    return onnxruntime


def _register_eca_op(options: Any, eca_op: bool | str | Path) -> tuple[Path | None, str | None]:
    """(the ECA custom-op library registered in `options` or None, why a library found could not be loaded)."""
    if eca_op is False:
        return None, None
    library = find_onnxruntime_op(None if eca_op is True else eca_op, required=eca_op is not True)
    if library is None:
        return None, None
    problem = register(options, library)
    if problem is None:
        return library, None
    warnings.warn(f"{library} not used ({problem}): ECA nodes run through their ONNX function", stacklevel=3)
    return None, problem


def _session_options(ort: Any, threads: int | None, optimize: bool, library: Path | None = None) -> Any:
    """SessionOptions with the runner's settings (and `library` registered, when given)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if library is not None:
        options.register_custom_ops_library(str(library))
    return options


def _has_eca_nodes(source: str | bytes) -> bool:
    """Whether the model holds eca_deploy.ECA nodes; False for one ONNX cannot read (the session says why)."""
    import onnx

    try:
        model = (
            onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(source, load_external_data=False)
        )
    except Exception:  # protobuf's and the file system's errors alike
        return False
    return has_eca_nodes(model)


class OnnxRuntimeRunner(Runner):
    """An InferenceSession over a file or serialized model.

    `optimize=False` disables graph optimisations: Q/DQ models then run as plain quantize/dequantize
    arithmetic (what TensorRT implements) instead of ORT's own fused int8 kernels.

    On the CPU provider, fused eca_deploy.ECA nodes run with the native kernel of libeca_onnxruntime_op.so when
    that library is found (`eca_op`: True to look for it like `find_onnxruntime_op`, a path to require that file,
    False never); otherwise, or when it cannot be loaded, through the model's ONNX function (same results).
    `self.eca_op` is the library registered (None when none was), `self.eca_op_error` why a found one was not.
    With the library and optimisations on, where ONNX Runtime runs the convolutions around ECA nodes in its
    blocked NCHWc layout, the session runs ONNX Runtime's optimised graph with those nodes in that layout too
    (`onnxruntime_layout.nchwc_model`, no reorders around them). `self.eca_implementation` says how the ECA nodes
    run: "function", "native", "native nchwc", or None for a model without them.
    """

    name = "onnxruntime"
    thread_safe = True  # InferenceSession.run may be called from several threads

    def __init__(
        self,
        model: str | Path | bytes,
        provider: str = "cpu",
        threads: int | None = None,
        optimize: bool = True,
        eca_op: bool | str | Path = True,
    ) -> None:
        ort = import_onnxruntime()
        if provider not in PROVIDERS:
            raise EcaDeployError(f"unknown provider {provider!r}: choose one of {', '.join(PROVIDERS)}")
        available = ort.get_available_providers()
        wanted = PROVIDERS[provider]
        if wanted not in available:
            raise MissingDependencyError(
                f"ONNX Runtime here has no {wanted} (available: {', '.join(available)}): "
                "install onnxruntime-gpu with CUDA/TensorRT, or use --provider cpu"
            )
        options = _session_options(ort, threads, optimize)
        self.eca_op, self.eca_op_error = _register_eca_op(options, eca_op) if provider == "cpu" else (None, None)
        source: str | bytes = model if isinstance(model, bytes) else str(model)
        self.eca_implementation = ("native" if self.eca_op else "function") if _has_eca_nodes(source) else None
        if self.eca_implementation == "native" and optimize:
            blocked = nchwc_model(source, lambda: _session_options(ort, threads, True, self.eca_op))
            if blocked is not None:
                source, self.eca_implementation = blocked, "native nchwc"
                options = _session_options(ort, threads, False, self.eca_op)  # the graph is optimised already
        providers = list(dict.fromkeys([wanted, "CPUExecutionProvider"]))
        try:
            self.session = ort.InferenceSession(source, options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types for unreadable models
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            label = "the model" if isinstance(model, bytes) else str(model)
            raise EcaDeployError(f"ONNX Runtime cannot load {label}: {first}") from None
        self.provider = provider

    def settings(self) -> dict[str, Any]:
        """How the model's ECA nodes run (none for a model without them)."""
        return {"eca_implementation": self.eca_implementation} if self.eca_implementation else {}

    @staticmethod
    def _info(args: Sequence[Any]) -> list[TensorInfo]:
        return [TensorInfo(a.name, tuple(a.shape), a.type) for a in args]

    @property
    def metadata(self) -> ModelMetadata | None:
        return metadata_from_props(dict(self.session.get_modelmeta().custom_metadata_map), self.outputs)

    @property
    def inputs(self) -> list[TensorInfo]:
        return self._info(self.session.get_inputs())

    @property
    def outputs(self) -> list[TensorInfo]:
        return self._info(self.session.get_outputs())

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, dict(feed)), strict=True))

    def make_step(self, feed: Mapping[str, np.ndarray], options: StepOptions) -> Callable[[], StepTimes | None]:
        """One `session.run` with the inputs bound once: the measuring loop adds nothing else."""
        run, names, bound = self.session.run, [o.name for o in self.session.get_outputs()], dict(feed)

        def step() -> None:
            run(names, bound)

        return step
