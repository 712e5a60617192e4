"""Bytes each formulation of an ECA layer moves through device memory, per ECA layer of a zoo model.

With S the bytes of the layer's tensor (N C H W x element size) and R = 1 where the block adds a residual after
the gate (every ECA-ResNet block: relu(x * g + identity); ECA-MobileNetV2's stride-1 blocks: x * g + identity):

- native: TensorRT's own decomposition. The pooling reads X; the gate multiply, fused with the Add (and ReLU),
  reads X again and the identity, and writes the output: (3 + R) S.
- plugin: today's one-input plugin on its fused path reads X and writes Y (2 S), then TensorRT's Add (+ReLU) kernel
  reads Y and the identity and writes again: (2 + 3 R) S.
- plugin with residual: the two-input plugin on its fused path: X, the identity, one write: (2 + R) S.
- floor: every input read once, the output written once: (2 + R) S.

The channel means (8 N C bytes on the two-pass path) and the fused path's halo channels, which neighbouring blocks
mostly read from L2, are left out; the two-pass path reads X once more (+S) in both plugin columns.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# eca_deploy.models imports torch: imported in eca_layers alone (`plugin traffic --help` imports this module).

MODELS = ("eca_mobilenetv2", "eca_resnet50")
FORMULATIONS = ("native", "plugin", "plugin_residual", "floor")
ELEMENT_BYTES = {"fp32": 4, "fp16": 2}


@dataclass(frozen=True)
class EcaLayer:
    """One ECA layer of a model at one input size: its tensor's [C, H, W], kernel size and what follows it."""

    model: str
    index: int
    channels: int
    height: int
    width: int
    k: int
    residual: str  # "none", "add" (MobileNetV2 stride-1 blocks) or "add+relu" (ResNet blocks)

    def tensor_bytes(self, batch: int, dtype: str) -> int:
        return batch * self.channels * self.height * self.width * ELEMENT_BYTES[dtype]

    def bytes(self, batch: int, dtype: str) -> dict[str, int]:
        """Bytes moved by each formulation (module docstring)."""
        s, r = self.tensor_bytes(batch, dtype), int(self.residual != "none")
        return {"native": (3 + r) * s, "plugin": (2 + 3 * r) * s, "plugin_residual": (2 + r) * s, "floor": (2 + r) * s}


def _hw(img_size: int | tuple[int, int]) -> tuple[int, int]:
    """(H, W) of an input size given as N (square) or (H, W)."""
    return (img_size, img_size) if isinstance(img_size, int) else img_size


def eca_layers(model: str, img_size: int | tuple[int, int] = 224) -> list[EcaLayer]:
    """The ECA layers of a zoo model in forward order, found by running it on the meta device (no weights)."""
    import torch

    from eca_deploy.models.eca import ECALayer
    from eca_deploy.models.registry import build_on_meta

    net = build_on_meta(model)
    follows: dict[int, str] = {}
    for module in net.modules():  # the block around each ECA layer says what follows it
        inner = [m for m in module.children() if isinstance(m, ECALayer)]
        inner += [m for child in module.children() for m in child.children() if isinstance(m, ECALayer)]
        if hasattr(module, "use_res_connect"):  # MobileNetV2's InvertedResidual: x + conv(x)
            for m in inner:
                follows[id(m)] = "add" if module.use_res_connect else "none"
        elif hasattr(module, "downsample"):  # ResNet blocks: relu(eca(...) + identity)
            for m in inner:
                follows[id(m)] = "add+relu"
    shapes: list[tuple[ECALayer, tuple[int, ...]]] = []
    hooks = [
        m.register_forward_hook(lambda mod, args, _out: shapes.append((mod, tuple(args[0].shape))))
        for m in net.modules()
        if isinstance(m, ECALayer)
    ]
    try:
        with torch.no_grad():
            net(torch.empty(1, 3, *_hw(img_size), device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return [
        EcaLayer(model, i, s[1], s[2], s[3], m.k_size, follows.get(id(m), "none")) for i, (m, s) in enumerate(shapes)
    ]


def traffic_rows(
    models: tuple[str, ...] = MODELS,
    batches: tuple[int, ...] = (1, 32),
    dtype: str = "fp16",
    img_size: int | tuple[int, int] = 224,
) -> list[dict[str, object]]:
    """One row per ECA layer: its shape and, per batch, the bytes of each formulation."""
    rows = []
    for model in models:
        for layer in eca_layers(model, img_size):
            row: dict[str, object] = asdict(layer)
            row["dtype"] = dtype
            for batch in batches:
                for name, value in layer.bytes(batch, dtype).items():
                    row[f"{name}_b{batch}"] = value
            rows.append(row)
    return rows


def _mb(value: float) -> str:
    return f"{value / 1e6:.2f}"


def traffic_markdown(
    models: tuple[str, ...] = MODELS,
    batches: tuple[int, ...] = (1, 32),
    dtype: str = "fp16",
    img_size: int | tuple[int, int] = 224,
) -> str:
    """Per model: identical consecutive layers on one row (with their count), MB per formulation and batch, total."""
    out = []
    short = {"native": "native", "plugin": "plugin", "plugin_residual": "plugin+res", "floor": "floor"}
    for model in models:
        layers = eca_layers(model, img_size)
        groups: list[tuple[EcaLayer, int]] = []
        for layer in layers:
            key = (layer.channels, layer.height, layer.width, layer.k, layer.residual)
            last = groups[-1][0] if groups else None
            if last is not None and (last.channels, last.height, last.width, last.k, last.residual) == key:
                groups[-1] = (last, groups[-1][1] + 1)
            else:
                groups.append((layer, 1))
        head = ["layers", "C x H x W", "k", "then"]
        head += [f"{short[f]} b{b}" for b in batches for f in FORMULATIONS]
        size = "x".join(map(str, _hw(img_size)))
        lines = [
            f"**{model}** at {size}, {dtype}, MB per layer (total: all {len(layers)} layers)",
            "",
            "| " + " | ".join(head) + " |",
            "|" + " --- |" * len(head),
        ]
        for layer, count in groups:
            cells = [
                f"{layer.index + 1}-{layer.index + count}" if count > 1 else str(layer.index + 1),
                f"{layer.channels}x{layer.height}x{layer.width}",
                str(layer.k),
                layer.residual,
            ]
            cells += [_mb(layer.bytes(b, dtype)[f]) for b in batches for f in FORMULATIONS]
            lines.append("| " + " | ".join(cells) + " |")
        totals = [_mb(sum(x.bytes(b, dtype)[f] for x in layers)) for b in batches for f in FORMULATIONS]
        lines.append("| total | | | | " + " | ".join(totals) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"
