"""ECA in ONNX Runtime's blocked NCHWc layout: the optimised graph, rewritten so ECA reads and writes blocked tensors.

At graph optimisation level ALL, ONNX Runtime's NchwcTransformer runs convolutions in its blocked layout
([N][C/B][H][W][B] data in an [N, Cp, H, W] tensor, Cp = C rounded up to the block B: 8 with AVX2, 16 with
AVX-512) and puts a ReorderOutput (blocked to NCHW) before and a ReorderInput (NCHW to blocked) after every node
it cannot run blocked, the custom ECA node among them: each a full read and write of the tensor. `nchwc_model`
makes ONNX Runtime's optimised graph (its documented offline mode: a session with `optimized_model_filepath`, in a
temporary folder: the file is made for this CPU and only used in this process) and puts the custom-op library's
eca_deploy.ECANchwc node in place of every ECA node whose X is such a ReorderOutput, dropping the reorders around
it. The runner then loads the rewritten graph with optimisations off.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eca_deploy.ops.contract import ECA_DOMAIN, ECA_PLUGIN_FIELDS, is_eca_node

if TYPE_CHECKING:
    import onnx

NCHWC_DOMAIN = "com.microsoft.nchwc"  # ONNX Runtime's blocked-layout ops
NCHWC_OP_TYPE = "ECANchwc"  # the custom-op library's ECA on that layout, in ECA's domain
ECA_ATTRIBUTES = {name for name, _ in ECA_PLUGIN_FIELDS}


@functools.cache
def block_size() -> int:
    """ONNX Runtime's NCHWc block on this CPU: the channels of a one-node ReorderInput's output for 4 channels."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import helper

    node = helper.make_node("ReorderInput", ["X"], ["Y"], domain=NCHWC_DOMAIN)
    graph = helper.make_graph(
        [node],
        "block",
        [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, [1, 4, 1, 1])],
        [helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, None)],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(NCHWC_DOMAIN, 1)]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    model = helper.make_model(graph, opset_imports=opsets).SerializeToString()
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return int(session.run(None, {"X": np.zeros((1, 4, 1, 1), np.float32)})[0].shape[1])


def _reorder(node: onnx.NodeProto | None, op_type: str) -> bool:
    """Whether `node` is ONNX Runtime's `op_type` reorder between the blocked layout and NCHW (not NHWC)."""
    if node is None or node.op_type != op_type or node.domain != NCHWC_DOMAIN:
        return False
    return all(a.name != "channels_last" or a.i == 0 for a in node.attribute)


def _subgraph_names(graph: onnx.GraphProto) -> Iterator[str]:
    """The names that nodes inside `graph`'s subgraphs (If, Loop, Scan bodies) read."""
    for node in graph.node:
        for attribute in node.attribute:
            for body in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                for inner in body.node:
                    yield from inner.input
                yield from _subgraph_names(body)


def _unique(name: str, taken: set[str]) -> str:
    candidate, i = f"{name}_nchwc", 1
    while candidate in taken:
        candidate, i = f"{name}_nchwc{i}", i + 1
    taken.add(candidate)
    return candidate


class _Rewrite:
    """One pass over a graph in its order: every rewritable ECA node becomes ECANchwc (see `rewrite_nchwc`)."""

    def __init__(self, graph: onnx.GraphProto, block: int) -> None:
        self.graph, self.block = graph, block
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.kept = {o.name for o in graph.output} | set(_subgraph_names(graph))  # read by what is not rewritten
        self.taken = {name for node in graph.node for name in [*node.input, *node.output]}
        self.blocked: dict[str, str] = {}  # NCHW name -> the blocked tensor it was made from (or is made into)
        self.renamed: dict[str, str] = {}  # a bypassed ReorderInput's output -> the ECANchwc output
        self.removed: set[int] = set()  # ids of the bypassed ReorderInputs

    def rewritable(self, node: onnx.NodeProto) -> bool:
        return is_eca_node(node) and _reorder(self.producer.get(node.input[0]), "ReorderOutput")

    def run(self) -> int:
        targets = [node for node in self.graph.node if self.rewritable(node)]
        if not targets:
            return 0
        wanted = {id(node) for node in targets}
        for name, node in self.producer.items():
            if _reorder(node, "ReorderOutput"):
                self.blocked[name] = node.input[0]
        nodes: list[onnx.NodeProto] = []
        for node in self.graph.node:
            if id(node) in self.removed:
                continue
            nodes += self.replace(node, wanted) if id(node) in wanted else [node]
        for node in nodes:
            node.input[:] = [self.renamed.get(name, name) for name in node.input]
        self.graph.ClearField("node")
        self.graph.node.extend(_without_unread_reorders(nodes, self.kept))
        _drop_stale_value_info(self.graph)
        return len(targets)

    def replace(self, node: onnx.NodeProto, wanted: set[int]) -> list[onnx.NodeProto]:
        """The ECANchwc node for `node`, with a ReorderInput before it for an NCHW residual and a ReorderOutput
        after it where something still reads its output in NCHW."""
        from onnx import helper

        x, y = node.input[0], node.output[0]
        channels = next(a.i for a in self.producer[x].attribute if a.name == "channels")
        before: list[onnx.NodeProto] = []
        inputs = [self.blocked[x]]
        if len(node.input) > 1 and node.input[1]:
            residual = node.input[1]
            if residual not in self.blocked:
                self.blocked[residual] = _unique(residual, self.taken)
                before.append(helper.make_node("ReorderInput", [residual], [self.blocked[residual]],
                                               domain=NCHWC_DOMAIN, channels_last=0))  # fmt: skip
            inputs.append(self.blocked[residual])
        self.blocked[y] = _unique(y, self.taken)
        attributes = [a for a in node.attribute if a.name in ECA_ATTRIBUTES]
        blocked = helper.make_node(NCHWC_OP_TYPE, inputs, [self.blocked[y]], name=node.name, domain=ECA_DOMAIN)
        blocked.attribute.extend([*attributes, helper.make_attribute("channels", channels),
                                  helper.make_attribute("block", self.block)])  # fmt: skip
        after = [blocked]
        if self.reads_nchw(y, wanted):
            after.append(helper.make_node("ReorderOutput", [self.blocked[y]], [y], domain=NCHWC_DOMAIN,
                                          channels=channels, channels_last=0))  # fmt: skip
        return before + after

    def reads_nchw(self, y: str, wanted: set[int]) -> bool:
        """Whether anything must read `y` in NCHW; bypasses (marks removed) the ReorderInputs that read it."""
        nchw = y in self.kept
        for consumer in self.consumers.get(y, []):
            if _reorder(consumer, "ReorderInput") and consumer.output[0] not in self.kept:
                self.renamed[consumer.output[0]] = self.blocked[y]
                self.removed.add(id(consumer))
            elif id(consumer) not in wanted or consumer.input[0] == y:
                nchw = True  # anything but a rewritten ECA node, which reads it as its residual
        return nchw


def _without_unread_reorders(nodes: list[onnx.NodeProto], kept: set[str]) -> list[onnx.NodeProto]:
    read = kept | {name for node in nodes for name in node.input}
    return [n for n in nodes if not (_reorder(n, "ReorderOutput") and n.output[0] not in read)]


def _drop_stale_value_info(graph: onnx.GraphProto) -> None:
    names = {name for node in graph.node for name in node.output} | {i.name for i in graph.input}
    names |= {i.name for i in graph.initializer}
    stale = [v for v in graph.value_info if v.name not in names]
    for value in stale:
        graph.value_info.remove(value)


def rewrite_nchwc(model: onnx.ModelProto, block: int) -> int:
    """Rewrite ONNX Runtime's optimised `model` in place; the number of ECA nodes now run blocked.

    Every eca_deploy.ECA node whose X is a ReorderOutput's output becomes an eca_deploy.ECANchwc node reading that
    ReorderOutput's blocked input; its residual reads the blocked tensor when it is a ReorderOutput's output or
    another rewritten node's output, else a new ReorderInput's. The ReorderInputs that read its output are
    bypassed (their readers read the blocked output); whatever else reads it (a graph output, an NCHW node) gets
    one ReorderOutput. ReorderOutputs left unread are removed; the node order stays topological.
    """
    return _Rewrite(model.graph, block).run()


def optimized_graph(model: str | Path | bytes, make_options: Callable[[], Any]) -> onnx.ModelProto | None:
    """ONNX Runtime's graph of `model` optimised at level ALL for this CPU, or None when it cannot be made.

    `make_options()` gives SessionOptions with the custom-op library registered and the runner's other settings
    (threads). The file ONNX Runtime writes lives in a temporary folder for the length of this call.
    """
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="eca-deploy-nchwc-") as folder:
        options = make_options()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        try:
            ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                 providers=["CPUExecutionProvider"])  # fmt: skip
            return onnx.load(options.optimized_model_filepath)
        except Exception:  # ORT's own exception types; the runner's own session reports what is wrong
            return None


def nchwc_model(model: str | Path | bytes, make_options: Callable[[], Any]) -> bytes | None:
    """ONNX Runtime's optimised graph of `model` (`optimized_graph`) with its ECA nodes run blocked, or None when
    none can be (no ECA node between reorders, or no optimised graph). Run the result with optimisations off."""
    optimized = optimized_graph(model, make_options)
    if optimized is None or not any(_reorder(node, "ReorderOutput") for node in optimized.graph.node):
        return None
    return optimized.SerializeToString() if rewrite_nchwc(optimized, block_size()) else None
