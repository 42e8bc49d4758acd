"""ncnn: run a variant's .param/.bin on the CPU (ARM boards, phones, x86); builders/ncnn.py builds it.

ncnn has no batch dimension (a Mat is one image's [C,H,W]): a batch runs image by image, each on its
own extractor, and the outputs are stacked back to the graph's [B,...] shapes recorded by the builder.
ncnn has no NonMaxSuppression either: a detector's graph stops at boxes [N,4] and scores [N,C], and this
runner finishes with the canonical NMS on the host (ops/nms.py, the contract's numpy reference), so the
outputs are the contract's num_dets / boxes / scores / labels, as on every backend. Where the graph made each
box compete for its best class only (Ultralytics' NMS), the builder cut that selection off too (ncnn has no
comparison layer) and the runner makes it here, first (settings "best_class").

Precision is set explicitly, never left to ncnn's defaults: on a CPU with fp16 arithmetic (ARMv8.2+,
i.e. every Jetson Orin and Raspberry Pi 5) ncnn turns fp16 storage and arithmetic on by itself, which
would make an "fp32" variant an fp16 one there and nowhere else. An fp16 variant stores weights and
activations in fp16 and computes in fp32, as ncnn does on x86, where it is verified: with fp16
arithmetic too, a MobileNetV3's logits on an (emulated) Cortex-A76 fell to cosine 0.993 against the
same variant on x86, under the fp16 parity limit of 0.999 (tests/test_aarch64.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from edgevision.backends.base import RunnerBase, TensorSpec, require
from edgevision.errors import BackendError
from edgevision.ops.nms import NMSParams, nms_reference


class Runner(RunnerBase):
    """One ncnn Net. Thread-safe: every call makes its own extractors (ncnn's Net is shared read-only)."""

    def __init__(self, files: Dict[str, Path], settings: Dict[str, Any], threads: Optional[int] = None,
                 streams: int = 1) -> None:
        ncnn = require("ncnn", "ncnn", "ncnn")
        self._ncnn = ncnn
        net = ncnn.Net()
        fp16 = settings["precision"] == "fp16"
        opt = net.opt
        opt.use_vulkan_compute = False
        opt.use_fp16_storage = opt.use_fp16_packed = fp16
        opt.use_fp16_arithmetic = False
        opt.use_bf16_storage = False
        opt.num_threads = max(1, (threads or os.cpu_count() or 1) // max(1, streams))
        if net.load_param(str(files["param"])) != 0 or net.load_model(str(files["weights"])) != 0:
            raise BackendError(f"ncnn could not load {files['param']} / {files['weights']} (a layer this ncnn "
                               f"build does not know, or a damaged file); built with ncnn {settings.get('ncnn')}")
        self._net = net
        self._inputs: List[Dict[str, Any]] = settings["inputs"]
        self._outputs: List[Dict[str, Any]] = settings["outputs"]
        self._nms = NMSParams(**settings["nms"]) if settings.get("nms") else None
        self._best_class = bool(settings.get("best_class"))  # Ultralytics' best class per box, made on the host
        self._argmax: List[Dict[str, Any]] = settings.get("argmax") or []  # segmentation labels, made on the host
        self.inputs = [TensorSpec(i["name"], ("batch", *i["shape"]), "float32") for i in self._inputs]
        names = (["num_dets", "boxes", "scores", "labels"] if self._nms
                 else [o["name"] for o in self._outputs] + [a["name"] for a in self._argmax])
        self.outputs = [TensorSpec(n, ("batch",), "float32") for n in names]
        self.host_seconds = 0.0  # time spent in the host NMS (the part ncnn cannot run), for the benchmark

    def infer(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        self.check_feeds(feeds)
        batch = len(next(iter(feeds.values())))
        per_image = [self._one(feeds, b) for b in range(batch)]
        outputs = {o["name"]: np.stack([p[o["name"]] for p in per_image]) for o in self._outputs}
        for a in self._argmax:  # ONNX ArgMax's ties (the first maximum) are numpy's
            outputs[a["name"]] = outputs[a["of"]].argmax(axis=1).astype(a["dtype"])
        if self._nms is None:
            return outputs
        start = time.perf_counter()
        scores = outputs["scores"]
        if self._best_class:  # the graph's Where(scores >= max over classes, scores, 0), in the same float32
            scores = np.where(scores >= scores.max(axis=2, keepdims=True), scores, np.float32(0))
        result = nms_reference(outputs["boxes"], scores, self._nms)
        self.host_seconds += time.perf_counter() - start
        return result

    def _one(self, feeds: Dict[str, np.ndarray], b: int) -> Dict[str, np.ndarray]:
        if self._net is None:
            raise BackendError("ncnn: the runner is closed")
        extractor = self._net.create_extractor()
        for spec in self._inputs:
            extractor.input(spec["blob"], self._ncnn.Mat(np.ascontiguousarray(feeds[spec["name"]][b])))
        out = {}
        for spec in self._outputs:
            status, mat = extractor.extract(spec["blob"])
            if status != 0:
                raise BackendError(f"ncnn: extracting '{spec['name']}' (blob {spec['blob']}) failed with status {status}")
            values = np.array(mat, dtype=np.float32)
            if values.size != int(np.prod(spec["shape"])):
                raise BackendError(f"ncnn: output '{spec['name']}' came out with shape {list(values.shape)}, the graph's "
                                   f"is {spec['shape']} per image: pnnx converted this graph wrongly")
            out[spec["name"]] = values.reshape(spec["shape"]).astype(spec["dtype"], copy=False)
        return out

    def close(self) -> None:
        self._net = None
