"""One way to open a model file: a plain-data `ModelSpec` of what to open and `open_model`, which returns the
`OpenedModel` (runner, description, precision, batch range, thread safety).

    spec = ModelSpec(Path("model.onnx"), runtime="openvino", threads=4)
    opened = open_model(spec)
    opened.runner.run_all(x, 8); opened.metadata; opened.precision; opened.batch_range

An ONNX model runs on ONNX Runtime (`provider` cpu/cuda/tensorrt) or OpenVINO (CPU); a TensorRT engine on
TensorRT. Adding a runtime means its runner (`eca_deploy.backends`), its name in RUNTIMES and RUNTIME_LABELS, and
one branch in `_open_runner`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eca_deploy.backends.base import Runner
from eca_deploy.backends.onnxruntime_runner import PROVIDERS, OnnxRuntimeRunner
from eca_deploy.backends.openvino_runner import LOWERINGS, OpenVINORunner
from eca_deploy.backends.tensorrt_runner import TensorRTRunner
from eca_deploy.errors import EcaDeployError
from eca_deploy.interface import ModelInterface, build_interface
from eca_deploy.onnx_io import load_onnx
from eca_deploy.precision.detect import detect_precision

if TYPE_CHECKING:
    import onnx

    from eca_deploy.exporters.metadata import ModelMetadata

RUNTIMES = ("onnxruntime", "openvino")  # what runs an ONNX model (--runtime)
RUNTIME_LABELS = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "tensorrt": "TensorRT"}  # for people
KINDS = ("onnx", "engine")


@dataclass(frozen=True)
class ModelSpec:
    """What to open and how; every field is plain data, checked when the spec is made (one-line errors)."""

    path: Path
    kind: str | None = None  # "onnx" or "engine"; None: the file's name and content decide (guess_kind)
    runtime: str = "onnxruntime"  # what runs an ONNX model: RUNTIMES
    provider: str = "cpu"  # ONNX Runtime's execution provider: cpu, cuda, tensorrt
    threads: int | None = None  # ONNX Runtime intra-op or OpenVINO inference threads; None: the runtime's choice
    plugin: Path | None = None  # TensorRT: the ECA plugin library (default: the sidecar's, then the usual places)
    eca_lowering: str | None = None  # OpenVINO: how eca_deploy.ECA nodes are converted, "op" or "opset"
    eca_op: bool | Path = True  # ONNX Runtime CPU: the native ECA op library (True: look for it; False: never)
    qdq_arithmetic: bool = False  # an INT8 model on ONNX Runtime as plain Q/DQ arithmetic (what TensorRT computes)
    img_size: tuple[int, int] | None = None  # H, W of a model whose input size is dynamic (--img-size)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if self.plugin is not None:
            object.__setattr__(self, "plugin", Path(self.plugin))
        if self.kind is not None and self.kind not in KINDS:
            raise EcaDeployError(f"unknown model kind {self.kind!r}: choose one of {', '.join(KINDS)}")
        if self.runtime not in RUNTIMES:
            raise EcaDeployError(f"unknown runtime {self.runtime!r}: choose one of {', '.join(RUNTIMES)}")
        if self.provider not in PROVIDERS:
            raise EcaDeployError(f"unknown provider {self.provider!r}: choose one of {', '.join(PROVIDERS)}")
        if self.runtime == "openvino" and self.provider != "cpu":
            raise EcaDeployError(f"--provider {self.provider} is an ONNX Runtime option: OpenVINO runs on the CPU here")
        if self.eca_lowering is not None and self.eca_lowering not in LOWERINGS:
            raise EcaDeployError(f"unknown ECA lowering {self.eca_lowering!r}: choose {', '.join(LOWERINGS)}")

    @classmethod
    def of(cls, onnx: Path | None, engine: Path | None, **options: Any) -> ModelSpec:
        """The spec of exactly one of an ONNX model or an engine (what --onnx / --engine give)."""
        if (onnx is None) == (engine is None):
            raise EcaDeployError("pass exactly one of --onnx MODEL.onnx or --engine MODEL.plan")
        return cls(onnx or engine, kind="onnx" if onnx is not None else "engine", **options)  # type: ignore[arg-type]

    @property
    def resolved_kind(self) -> str:
        return self.kind or guess_kind(self.path)


@dataclass(frozen=True)
class OpenedModel:
    """An open model: its runner and what is known of it."""

    spec: ModelSpec
    runner: Runner
    metadata: ModelMetadata | None  # the ONNX metadata or the engine's sidecar
    precision: str | None  # fp32/fp16/int8 from the ONNX graph or the sidecar; None: an engine without a sidecar
    onnx: onnx.ModelProto | None = None  # the graph of an ONNX model (check --per-layer, memory estimates)

    @property
    def label(self) -> str:
        return str(self.spec.path)

    @property
    def name(self) -> str:
        return self.spec.path.name

    @property
    def backend(self) -> str:
        return self.runner.backend

    @property
    def batch_range(self) -> tuple[int, int | None]:
        return self.runner.batch_range()

    @property
    def thread_safe(self) -> bool:
        return self.runner.thread_safe

    def interface(self, *, metadata: ModelMetadata | None = None, **options: Any) -> ModelInterface:
        """The model's interface (input size and preprocessing, named outputs) from its description, or
        `metadata` when given; `options` are build_interface's (preprocessing, adjust, warn)."""
        described = metadata if metadata is not None else self.metadata
        return build_interface(self.runner, described, label=self.label, img_size=self.spec.img_size, **options)


def open_model(spec: ModelSpec) -> OpenedModel:
    """Open `spec` on its runtime; one-line errors for missing files, an ONNX passed as an engine and the like."""
    if spec.resolved_kind == "engine":
        runner = _open_engine(spec)
        return OpenedModel(spec, runner, runner.metadata, runner.precision)
    model = load_onnx(spec.path)
    precision = detect_precision(model)
    runner = _open_runner(spec, precision)
    return OpenedModel(spec, runner, runner.metadata, precision, model)


def _open_runner(spec: ModelSpec, precision: str) -> Runner:
    """The runner of an ONNX model on `spec.runtime`."""
    if spec.runtime == "openvino":
        return OpenVINORunner(spec.path, threads=spec.threads, eca_lowering=spec.eca_lowering)
    optimize = not (spec.qdq_arithmetic and precision == "int8")
    return OnnxRuntimeRunner(spec.path, spec.provider, threads=spec.threads, optimize=optimize, eca_op=spec.eca_op)


def _open_engine(spec: ModelSpec) -> Runner:
    path = spec.path
    if not path.is_file():
        raise EcaDeployError(f"engine file {path} does not exist: build one with eca-deploy build")
    if looks_like_onnx(path):
        raise EcaDeployError(f"{path} is an ONNX model, not a TensorRT engine: pass it with --onnx")
    return TensorRTRunner(path, plugin=spec.plugin)


def guess_kind(path: Path) -> str:
    """ "onnx" for a file named .onnx or one that parses as an ONNX graph, else "engine"."""
    return "onnx" if looks_like_onnx(path) else "engine"


def looks_like_onnx(path: Path) -> bool:
    if path.suffix == ".onnx":
        return True
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not parseable as ONNX: fine, it may be an engine
        return False
    return bool(model.graph.node)
