"""Should OpenVINO run Faster R-CNN's multi-level RoI Align as its fused
ExperimentalDetectronROIFeatureExtractor? Measured, not assumed.

    python benchmarks/roi_extractor.py      # writes benchmarks/results/roi_extractor.{json,md}

1. The op alone: 1000 random RoIs over a 4-level FPN (256 channels) at 320 and 800 px, batch 1:
   the fused op against what edgevision exports (one ROIAlign per level, masked by torchvision's
   level mapping, summed), same outputs.
2. The whole model: fasterrcnn_resnet50_fpn at 320 (random weights, BatchNorm re-estimated) as
   edgevision exports it, read by OpenVINO as is, and with the four ROIAlign rewritten into the
   fused op (this script's graph rewrite), batch 1, f32, interleaved.
The fused op takes batch-1 feature maps only. edgevision keeps the per-level form, which works at
any batch size, unless the whole-model figure says the fused op is faster.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, List

import numpy as np
import openvino as ov
import openvino.opset13 as ops
from openvino.utils.node_factory import NodeFactory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgevision import api  # noqa: E402
from edgevision.verify.latency import interleaved, summarize  # noqa: E402
from edgevision.bench.machine import machine  # noqa: E402
from edgevision.reporting import SilentReporter  # noqa: E402
from edgevision.random_weights import reestimated_checkpoint  # noqa: E402
from edgevision.recipe import parse_recipe  # noqa: E402

OUT = Path(__file__).parent / "results"
ROUNDS = int(os.environ.get("ROUNDS", "20"))
CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
STRIDES = (4, 8, 16, 32)


def fused_extractor(rois: Any, maps: List[Any], output_size: int, sampling_ratio: int) -> Any:
    return NodeFactory("opset6").create(
        "ExperimentalDetectronROIFeatureExtractor", [rois] + maps,
        {"output_size": output_size, "sampling_ratio": sampling_ratio, "pyramid_scales": list(STRIDES), "aligned": False})


def op_models(size: int, n: int) -> tuple:
    def inputs() -> tuple:
        rois = ops.parameter([n, 4], np.float32, name="rois")
        return rois, [ops.parameter([1, 256, size // s, size // s], np.float32, name=f"p{s}") for s in STRIDES]

    rois, maps = inputs()
    fused = ov.Model([fused_extractor(rois.output(0), [m.output(0) for m in maps], 7, 2).output(0)], [rois, *maps])
    rois, maps = inputs()

    def c(v: float) -> Any:
        return ops.constant(np.float32(v))

    w = ops.subtract(ops.gather(rois, [2], 1), ops.gather(rois, [0], 1))
    h = ops.subtract(ops.gather(rois, [3], 1), ops.gather(rois, [1], 1))
    level = ops.floor(ops.add(ops.divide(ops.log(ops.divide(ops.sqrt(ops.multiply(w, h)), c(224.0))), c(np.log(2))),
                              c(4.0 + 1e-6)))
    level = ops.reshape(ops.subtract(ops.clamp(level, 2.0, 5.0), c(2.0)), [n, 1, 1, 1], False)
    batch = ops.constant(np.zeros(n, np.int32))
    total = None
    for i, (m, s) in enumerate(zip(maps, STRIDES)):
        part = ops.multiply(ops.roi_align(m, rois, batch, 7, 7, 2, 1.0 / s, "avg", "asymmetric"),
                            ops.convert(ops.equal(level, c(float(i))), "f32"))
        total = part if total is None else ops.add(total, part)
    return fused, ov.Model([total.output(0)], [rois, *maps])


def fuse(model: Any) -> int:
    """Rewrite each group of ROIAlign over the same RoIs, masked and summed, into the fused op."""
    groups: dict = {}
    for node in model.get_ordered_ops():
        if node.get_type_name() == "ROIAlign" and node.get_attributes().get("aligned_mode") == "asymmetric":
            src = node.input_value(1)
            groups.setdefault(f"{src.get_node().get_friendly_name()}:{src.get_index()}", []).append(node)
    done = 0
    for aligns in (g for g in groups.values() if len(g) > 1):
        aligns.sort(key=lambda n: -float(n.get_attributes()["spatial_scale"]))
        terms = [next(iter(a.output(0).get_target_inputs())).get_node() for a in aligns]
        names = {t.get_friendly_name() for t in terms}
        node, covered = terms[0], {terms[0].get_friendly_name()}
        while covered != names:  # follow the Add chain until it has summed every level
            node = next(iter(node.output(0).get_target_inputs())).get_node()
            covered |= {node.input_value(k).get_node().get_friendly_name() for k in range(2)} & names
        attrs = aligns[0].get_attributes()
        new = fused_extractor(aligns[0].input_value(1), [a.input_value(0) for a in aligns], int(attrs["pooled_h"]),
                              int(attrs["sampling_ratio"]))
        node.output(0).replace(new.output(0))
        done += 1
    model.validate_nodes_and_infer_types()
    return done



def main() -> None:
    core = ov.Core()
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    results: dict = {"op": [], "model": None}
    for size in (320, 800):
        n = 1000
        xy = rng.uniform(0, size * 0.8, (n, 2))
        rois = np.concatenate([xy, np.minimum(xy + rng.uniform(4, size * 0.5, (n, 2)), size)], 1).astype(np.float32)
        feeds = {"rois": rois, **{f"p{s}": rng.standard_normal((1, 256, size // s, size // s)).astype(np.float32)
                                  for s in STRIDES}}
        fused, per_level = (core.compile_model(m, "CPU", CONFIG).create_infer_request() for m in op_models(size, n))
        diff = float(np.abs(fused.infer(feeds)[0] - per_level.infer(feeds)[0]).max())
        t = interleaved({"fused": lambda: fused.infer(feeds), "per-level": lambda: per_level.infer(feeds)}, ROUNDS, warmup=3)
        results["op"].append({"size": size, "rois": n, "max_diff": diff, **{k: summarize(v) for k, v in t.items()}})
    with tempfile.TemporaryDirectory() as tmp:
        data = {"name": "frcnn-r50", "task": "detection",
                "model": {"source": "fasterrcnn_resnet50_fpn", "labels": ["background", "circle", "square", "triangle"]},
                "input": {"size": [320, 320]}, "targets": [{"backend": "onnxruntime"}],
                "verify": {"images": 2, "timing_rounds": 0}, "output": f"{tmp}/frcnn"}
        data["model"]["checkpoint"] = str(reestimated_checkpoint(data, Path(tmp) / "frcnn.pt"))
        api.compile(parse_recipe(data), reporter=SilentReporter())
        plain, rewritten = core.read_model(f"{tmp}/frcnn/model.onnx"), core.read_model(f"{tmp}/frcnn/model.onnx")
        name = plain.inputs[0].get_any_name()
        for m in (plain, rewritten):
            m.reshape({name: [1, 3, 320, 320]})
        count = fuse(rewritten)
        a, b = (core.compile_model(m, "CPU", CONFIG).create_infer_request() for m in (plain, rewritten))
        x = rng.standard_normal((1, 3, 320, 320)).astype(np.float32)
        ra, rb = a.infer({name: x}), b.infer({name: x})
        diff = max(float(np.abs(np.asarray(ra[i], float) - np.asarray(rb[i], float)).max()) for i in range(len(ra)))
        t = interleaved({"fused": lambda: b.infer({name: x}), "per-level": lambda: a.infer({name: x})}, ROUNDS, warmup=3)
        results["model"] = {"model": "fasterrcnn_resnet50_fpn", "size": 320, "fused_groups": count, "max_output_diff": diff,
                            **{k: summarize(v) for k, v in t.items()}}
    info = machine(os.cpu_count())
    info["seconds"] = round(time.perf_counter() - start, 1)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "roi_extractor.json").write_text(json.dumps({"machine": info, "rounds": ROUNDS, **results}, indent=2) + "\n")
    lines = ["# OpenVINO: fused ExperimentalDetectronROIFeatureExtractor vs per-level ROIAlign", "",
             f"{info['cpu']}, {info['cores']} cores, f32, batch 1, median of {ROUNDS} interleaved rounds; {info['seconds']:.0f} s.", "",
             "| what | fused p50 ms | per-level p50 ms | per-level / fused | max output diff |", "|---|---|---|---|---|"]
    for r in results["op"]:
        lines.append(f"| the op alone, {r['rois']} RoIs, 4 levels, {r['size']} px | {r['fused']['p50']:.1f} | "
                     f"{r['per-level']['p50']:.1f} | {r['per-level']['p50'] / r['fused']['p50']:.2f}x | {r['max_diff']:.1e} |")
    m = results["model"]
    lines.append(f"| whole {m['model']} at {m['size']} px | {m['fused']['p50']:.1f} | {m['per-level']['p50']:.1f} | "
                 f"{m['per-level']['p50'] / m['fused']['p50']:.2f}x | {m['max_output_diff']:.1e} |")
    (OUT / "roi_extractor.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
