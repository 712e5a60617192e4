"""The PyTorch reference runner (float32, CPU by default)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from eca_deploy.backends.base import Runner, TensorInfo
from eca_deploy.errors import EcaDeployError
from eca_deploy.interface import flatten_outputs


class TorchRunner(Runner):
    name = "torch"
    thread_safe = True  # a forward pass under no_grad keeps no state between calls

    def __init__(
        self,
        model: nn.Module,
        input_name: str = "input",
        output_names: Sequence[str] = ("logits",),
        device: str = "cpu",
        label: str = "the PyTorch model",
    ) -> None:
        self.model = model.eval().to(device)
        self.device = device
        self.label = label
        self._input = TensorInfo(input_name, ("N", 3, None, None), "float32")
        self._outputs = [TensorInfo(n, ("N", None), "float32") for n in output_names]

    @property
    def inputs(self) -> list[TensorInfo]:
        return [self._input]

    @property
    def outputs(self) -> list[TensorInfo]:
        return list(self._outputs)

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(feed[self._input.name], dtype=np.float32)).to(self.device)
        with torch.no_grad():
            tensors = flatten_outputs(self.model(x), self.label)
        if len(tensors) != len(self._outputs):
            raise EcaDeployError(
                f"{self.label} returns {len(tensors)} outputs, the ONNX model has {len(self._outputs)} "
                f"({', '.join(o.name for o in self._outputs)}): check --model and --weights"
            )
        return {o.name: y.float().cpu().numpy() for o, y in zip(self._outputs, tensors, strict=True)}
