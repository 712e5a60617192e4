"""PyTorch -> ONNX: dynamic or static batch, chosen opset, cleaned graph, metadata, atomic write.

The default exporter is the TorchScript-based `torch.onnx.export(dynamo=False)`: it emits exactly the
requested opset (13 to 20) in under a second, and after the onnxscript optimiser (constant folding,
Identity removal) its graph is plain Conv/Clip/Add/Gemm plus the ECA blocks, which the fusion pass turns
into single nodes. The dynamo-based exporter (`exporter="dynamo"`) gives a similar graph but emits
opset 18 or newer only and takes ~10x longer. See docs/export.md.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import onnx
import torch
from torch import nn

from eca_deploy.data.images import Preprocessing
from eca_deploy.errors import EcaDeployError, SettingError, first_line
from eca_deploy.exporters.metadata import ModelMetadata, write_metadata
from eca_deploy.interface import (
    INPUT_NAME,
    DetectionSpec,
    OutputSpec,
    export_output_specs,
    flatten_outputs,
)
from eca_deploy.models.registry import block_k_sizes
from eca_deploy.onnx_io import check_model
from eca_deploy.version import __version__

MIN_OPSET, MAX_OPSET = 13, 20
EXPORTERS = ("torchscript", "dynamo")


@dataclass(frozen=True)
class ExportOptions:
    opset: int = 17
    batch: int | None = None  # None: dynamic batch
    img_size: int = 224
    exporter: str = "torchscript"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    output_names: tuple[str, ...] | None = None  # None: the module's `output_names`, else logits / output0..N
    classifier: bool = False  # a zoo or timm classifier: its one output is logits whatever its shape

    @property
    def hw(self) -> tuple[int, int]:
        """Export size: the preprocessing's H x W when it is `img_size` high, else img_size square."""
        prep = self.preprocessing
        return prep.hw if prep.size == self.img_size else (self.img_size, self.img_size)

    def validate(self) -> None:
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise SettingError(f"{{opset}} {self.opset} is not supported: choose {MIN_OPSET} to {MAX_OPSET}")
        if self.exporter not in EXPORTERS:
            raise SettingError(f"unknown exporter {self.exporter!r} ({{exporter}}): one of {', '.join(EXPORTERS)}")
        if self.exporter == "dynamo" and self.opset < 18:
            raise EcaDeployError(
                f"the dynamo exporter emits opset 18 or newer, not {self.opset}: use --exporter torchscript"
            )
        if self.batch is not None and self.batch < 1:
            raise SettingError(f"{{batch}} must be 'dynamic' or a positive integer, got {self.batch}")
        if min(self.hw) < 32:
            raise EcaDeployError(f"image size {self.img_size} is too small for a 32x-downsampling network: use >= 32")


def _export_torchscript(
    model: nn.Module, example: torch.Tensor, path: Path, opts: ExportOptions, names: Sequence[str]
) -> None:
    dynamic_axes = None if opts.batch else {n: {0: "batch"} for n in (INPUT_NAME, *names)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(names),
            opset_version=opts.opset,
            dynamo=False,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )


def _export_dynamo(
    model: nn.Module, example: torch.Tensor, path: Path, opts: ExportOptions, names: Sequence[str]
) -> None:
    dynamic_shapes = None if opts.batch else ({0: torch.export.Dim("batch", min=1, max=4096)},)
    # The exporter logs a warning per torchvision op when torchvision is absent; none is used here.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            input_names=[INPUT_NAME],
            output_names=list(names),
            opset_version=opts.opset,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            external_data=False,
            verbose=False,
        )
        program.save(str(path), external_data=False)


def _clean(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxscript.optimizer

    return onnxscript.optimizer.optimize(model)


def _name_batch_dim(model: onnx.ModelProto) -> None:
    """Give the dynamic batch dimension the same name on the input and the output."""
    for value in (*model.graph.input, *model.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        if not dim.HasField("dim_value"):
            dim.dim_param = "batch"


def _fill_output_dims(model: onnx.ModelProto, specs: Sequence[OutputSpec]) -> None:
    """Give every output dimension but the batch the size the probe measured where the graph left it unknown
    (e.g. YOLO's 4 + classes after a concatenation): only the batch is dynamic in an export."""
    probed = {s.name: s.shape for s in specs}
    for value in model.graph.output:
        shape = probed.get(value.name)
        dims = value.type.tensor_type.shape.dim
        if shape is None or len(dims) != len(shape):
            continue
        for dim, size in list(zip(dims, shape, strict=True))[1:]:
            if not dim.HasField("dim_value") and isinstance(size, int):
                dim.dim_value = size


def _declared_classes(model: nn.Module) -> int:
    """A model without a logits output (a detector) may still say its class count (attribute `num_classes`, as
    timm's models do); the metadata keeps it so that `check` can rebuild a factory model with that count."""
    classes = getattr(model, "num_classes", 0)
    return classes if isinstance(classes, int) and classes > 0 else 0


def export_onnx(model: nn.Module, model_name: str, opts: ExportOptions, weights_source: str = "") -> onnx.ModelProto:
    """Export `model` to a checked in-memory ONNX model with eca-deploy metadata (save with save_onnx)."""
    opts.validate()
    model = model.eval()
    # Example batch 2 for dynamic export: torch.export specialises a batch of 1 to a constant.
    example = torch.randn(opts.batch or 2, 3, *opts.hw)
    specs = output_specs(model, model_name, example, opts)
    names = [s.name for s in specs]
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        try:
            (_export_dynamo if opts.exporter == "dynamo" else _export_torchscript)(model, example, raw, opts, names)
        except Exception as exc:  # the exporters raise many types; the user needs the first line
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise EcaDeployError(f"torch.onnx.export ({opts.exporter}) failed: {first}") from None
        onnx_model = _clean(onnx.load(str(raw)))
    _fill_output_dims(onnx_model, specs)
    _name_batch_dim(onnx_model)
    onnx_model.producer_name, onnx_model.producer_version = "eca-deploy", __version__
    prep = opts.preprocessing.at_hw(opts.hw)
    outputs = _graph_outputs(onnx_model, specs)
    logits = next((o for o in outputs if o.kind == "logits"), None)
    meta = ModelMetadata(
        model=model_name,
        k_sizes=tuple(block_k_sizes(model)),
        num_classes=(logits.classes or 0) if logits is not None else _declared_classes(model),
        preprocessing=prep,
        opset=opts.opset,
        exporter=opts.exporter,
        weights=weights_source,
        versions={"eca_deploy": __version__, "torch": torch.__version__.split("+")[0], "onnx": onnx.__version__},
        outputs=outputs,
    )
    write_metadata(onnx_model, replace(meta, detection=_detection_spec(model, outputs)))
    check_model(onnx_model, "the exported model")
    onnx.shape_inference.infer_shapes(onnx_model, check_type=True, strict_mode=True)
    return onnx_model


def _detection_spec(model: nn.Module, outputs: Sequence[OutputSpec]) -> DetectionSpec | None:
    """The module's declared head layout (a `detection` DetectionSpec attribute or method, as
    eca_deploy.models.ultralytics.YoloRawHead has), checked against the exported outputs."""
    declared = getattr(model, "detection", None)
    spec = declared() if callable(declared) else declared
    if spec is None:
        return None
    if not isinstance(spec, DetectionSpec):
        raise EcaDeployError(f"the module's detection must be an eca_deploy.interface.DetectionSpec, got {spec!r}")
    names = {o.name for o in outputs}
    if not set(spec.outputs) <= names:
        raise EcaDeployError(
            f"the module's detection reads {', '.join(spec.outputs)}, not all outputs of the "
            f"model ({', '.join(sorted(names))})"
        )
    return spec


def output_specs(model: nn.Module, label: str, example: torch.Tensor, opts: ExportOptions) -> tuple[OutputSpec, ...]:
    """Run the module once on `example`: its outputs' names, shapes and kinds (one-line refusal otherwise)."""
    try:  # no_grad, not inference_mode: a module may cache tensors here (YOLO's anchors) that the tracer meets again
        with torch.no_grad():
            value = model(example)
    except Exception as exc:  # the network's own forward: one line
        raise EcaDeployError(
            f"{label} does not run on {opts.hw[0]}x{opts.hw[1]} images ({type(exc).__name__}: {first_line(exc)})"
        ) from None
    tensors = flatten_outputs(value, label)
    shapes = [tuple(int(d) for d in t.shape) for t in tensors]
    return export_output_specs(model, shapes, opts.output_names, classifier=opts.classifier)


def _graph_outputs(model: onnx.ModelProto, specs: Sequence[OutputSpec]) -> tuple[OutputSpec, ...]:
    """The specs with the exported graph's shapes (a dynamic batch as "batch")."""
    kinds = {s.name: s.kind for s in specs}
    out = []
    for value in model.graph.output:
        dims = value.type.tensor_type.shape.dim
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims)
        out.append(OutputSpec(value.name, shape, kinds.get(value.name, "tensor")))
    return tuple(out)
