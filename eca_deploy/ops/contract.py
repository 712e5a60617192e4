"""The ECA op contract (docs/eca_op.md): attributes, their defaults and meaning, and the op's variants.

    Y = act(X * gate(conv_k(pad(mean_hw(X))) + bias) + residual)

Everything that implements the op (the float64 reference, the ONNX function, the fusion pass, the FP16 pass,
the TensorRT plugin fields, the CUDA and OpenVINO kernels) takes its attributes from here. The defaults
reproduce the original ECA layer exactly, so nodes written before an attribute existed keep their meaning.
Enum attributes are strings in ONNX; native code receives their index in the tuples below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

ECA_OP_TYPE = "ECA"
ECA_DOMAIN = "eca_deploy"
ECA_DOMAIN_VERSION = 1
# The TensorRT plugin's version: 1 took the weights alone; 2 added bias, padding, gate, activation, the residual
# input and the field-set check. Bump it (and ECA_PLUGIN_FIELDS) whenever the op changes what it computes.
ECA_PLUGIN_VERSION = "2"
ECA_PLUGIN_NAMESPACE = "eca_deploy"
ECA_WEIGHTS_ATTR = "weights"
ECA_FIELD_SET_ATTR = "field_set"  # node attribute and plugin field: plugin_field_set_hash(), checked by the library
ECA_MAX_K = 63  # largest kernel the native kernels take (plugins/kernels/eca_kernels.h)

# Enum attributes: the first value is the default; native code uses the index.
ECA_PADDINGS = ("zeros", "circular")  # channels outside [0, C): zero, or channel (i mod C)
ECA_GATES = ("sigmoid", "hard_sigmoid")  # 1/(1+exp(-s)), or clamp(s/6 + 1/2, 0, 1) (PyTorch nn.Hardsigmoid)
ECA_ACTIVATIONS = ("none", "relu")  # applied last, after the residual addition
HARD_SIGMOID_ALPHA, HARD_SIGMOID_BETA = 1.0 / 6.0, 0.5  # ONNX HardSigmoid attributes of PyTorch's definition

# The plugin's fields, in the order the library declares them: (name, "f32[]" | "f32" | the enum's values).
ECA_PLUGIN_FIELDS: tuple[tuple[str, str | tuple[str, ...]], ...] = (
    (ECA_WEIGHTS_ATTR, "f32[]"),
    ("bias", "f32"),
    ("padding", ECA_PADDINGS),
    ("gate", ECA_GATES),
    ("activation", ECA_ACTIVATIONS),
)
ECA_PLUGIN_INPUTS = "X,residual?"


def is_eca_node(node: Any) -> bool:
    """Whether an ONNX NodeProto is a fused eca_deploy.ECA node."""
    return node.op_type == ECA_OP_TYPE and node.domain == ECA_DOMAIN


def has_eca_nodes(model: Any) -> bool:
    """Whether an ONNX ModelProto's graph holds fused eca_deploy.ECA nodes (a fused model)."""
    return any(is_eca_node(n) for n in model.graph.node)


def plugin_field_set() -> str:
    """The field set the library checks, e.g. 'ECA/2 weights:f32[] bias:f32 padding:zeros|circular ... inputs:...'.

    plugins/tensorrt/eca_plugin.cpp (fieldSetSignature) builds the same string from its own field tables.
    """
    fields = [f"{name}:{kind if isinstance(kind, str) else '|'.join(kind)}" for name, kind in ECA_PLUGIN_FIELDS]
    return " ".join([f"{ECA_OP_TYPE}/{ECA_PLUGIN_VERSION}", *fields, f"inputs:{ECA_PLUGIN_INPUTS}"])


def plugin_field_set_hash(signature: str | None = None) -> str:
    """64-bit FNV-1a of plugin_field_set(), 16 hex digits (the library computes the same from its own tables)."""
    value = 0xCBF29CE484222325
    for byte in (plugin_field_set() if signature is None else signature).encode():
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{value:016x}"


# The first IR version with function overloads, which tell the variants' function bodies apart.
OVERLOAD_IR_VERSION = 10


@dataclass(frozen=True)
class EcaVariant:
    """What changes the op's computation graph: one ONNX function body (overload) and one kernel branch each."""

    padding: str = ECA_PADDINGS[0]
    gate: str = ECA_GATES[0]
    activation: str = ECA_ACTIVATIONS[0]
    residual: bool = False

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("padding", self.padding, ECA_PADDINGS),
            ("gate", self.gate, ECA_GATES),
            ("activation", self.activation, ECA_ACTIVATIONS),
        ):
            if value not in allowed:
                raise ValueError(f"ECA attribute {name}={value!r}: expected one of {', '.join(allowed)}")

    @property
    def overload(self) -> str:
        """The ONNX function overload of this variant: "" for the original op, else its non-default parts."""
        parts = [
            self.padding if self.padding != ECA_PADDINGS[0] else "",
            self.gate if self.gate != ECA_GATES[0] else "",
            "residual" if self.residual else "",
            self.activation if self.activation != ECA_ACTIVATIONS[0] else "",
        ]
        return "_".join(p for p in parts if p)

    @property
    def codes(self) -> tuple[int, int, int]:
        """(padding, gate, activation) as the indices native code takes."""
        return ECA_PADDINGS.index(self.padding), ECA_GATES.index(self.gate), ECA_ACTIVATIONS.index(self.activation)


@dataclass(frozen=True)
class EcaAttributes:
    """The attributes of one ECA node."""

    weights: tuple[float, ...]
    bias: float = 0.0
    padding: str = ECA_PADDINGS[0]
    gate: str = ECA_GATES[0]
    activation: str = ECA_ACTIVATIONS[0]
    residual: bool = field(default=False)  # a second input, not an attribute

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
        k = len(self.weights)
        if k % 2 != 1 or k > ECA_MAX_K:
            raise ValueError(f"ECA needs an odd number of weights, 1 to {ECA_MAX_K}, got {k}")
        self.variant  # noqa: B018 - validates the enum attributes

    @property
    def k(self) -> int:
        return len(self.weights)

    @property
    def variant(self) -> EcaVariant:
        return EcaVariant(self.padding, self.gate, self.activation, self.residual)

    def node_attributes(self) -> dict[str, object]:
        """ONNX attributes of the node, every one written out (function inliners differ on defaults)."""
        return {
            ECA_WEIGHTS_ATTR: list(self.weights),
            "bias": float(self.bias),
            "padding": self.padding,
            "gate": self.gate,
            "activation": self.activation,
        }

    @classmethod
    def from_onnx(cls, attributes: dict[str, object], n_inputs: int) -> EcaAttributes:
        """From a node's attributes ({name: value}, strings as str or bytes) and its number of inputs."""

        def text(name: str, default: str) -> str:
            value = attributes.get(name, default)
            return value.decode() if isinstance(value, bytes) else str(value)

        weights = attributes.get(ECA_WEIGHTS_ATTR)
        if weights is None:
            raise ValueError("ECA node without the 'weights' attribute")
        return cls(
            weights=tuple(weights),  # type: ignore[arg-type]
            bias=float(attributes.get("bias", 0.0)),  # type: ignore[arg-type]
            padding=text("padding", ECA_PADDINGS[0]),
            gate=text("gate", ECA_GATES[0]),
            activation=text("activation", ECA_ACTIVATIONS[0]),
            residual=n_inputs > 1,
        )

    @classmethod
    def of(cls, weights: Sequence[float] | EcaAttributes) -> EcaAttributes:
        return weights if isinstance(weights, EcaAttributes) else cls(tuple(weights))
