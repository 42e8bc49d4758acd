"""The PyTorch reference runner: the export wrapper run eagerly, same feeds and output names."""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import torch

from edgevision.backends.base import RunnerBase, TensorSpec


class Runner(RunnerBase):
    def __init__(self, module: torch.nn.Module, input_name: str, output_names: Sequence[str]) -> None:
        self._module = module.eval()
        self.inputs: List[TensorSpec] = [TensorSpec(input_name, ("batch", None, None, None), "float32")]
        self.outputs: List[TensorSpec] = [TensorSpec(n, (), "") for n in output_names]

    @torch.inference_mode()
    def infer(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(feeds[self.inputs[0].name]))
        out = self._module(x)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return {spec.name: t.numpy() for spec, t in zip(self.outputs, out)}
