"""The PyTorch reference runner (float32, CPU by default)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from eca_deploy.backends.base import Runner, TensorInfo


class TorchRunner(Runner):
    name = "torch"

    def __init__(self, model: nn.Module, input_name: str = "input", output_name: str = "logits",
                 device: str = "cpu") -> None:  # fmt: skip
        self.model = model.eval().to(device)
        self.device = device
        self._input = TensorInfo(input_name, ("N", 3, None, None), "float32")
        self._output = TensorInfo(output_name, ("N", None), "float32")

    @property
    def inputs(self) -> list[TensorInfo]:
        return [self._input]

    @property
    def outputs(self) -> list[TensorInfo]:
        return [self._output]

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(feed[self._input.name], dtype=np.float32)).to(self.device)
        with torch.inference_mode():
            y = self.model(x)
        return {self._output.name: y.float().cpu().numpy()}
