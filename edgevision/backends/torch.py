"""The PyTorch reference runner: the export wrapper run eagerly, same feeds and output names."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from edgevision.backends.base import RunnerBase, TensorSpec


class Runner(RunnerBase):
    def __init__(self, module: torch.nn.Module, input_names: Sequence[str], output_names: Sequence[str],
                 post: Optional[Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]] = None) -> None:
        """`post` maps the module's outputs to the graph contract (detection: the reference NMS)."""
        self._module = module.eval()
        self._post = post
        self.inputs: List[TensorSpec] = [TensorSpec(n, ("batch",), "float32") for n in input_names]
        self.outputs: List[TensorSpec] = [TensorSpec(n, (), "") for n in output_names]

    @torch.inference_mode()
    def infer(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        out = self._module(*(torch.from_numpy(np.ascontiguousarray(feeds[spec.name])) for spec in self.inputs))
        out = out if isinstance(out, (tuple, list)) else (out,)
        result = {spec.name: t.numpy() for spec, t in zip(self.outputs, out)}
        return self._post(result) if self._post else result
