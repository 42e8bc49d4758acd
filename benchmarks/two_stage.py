"""Faster / Mask R-CNN end to end: torchvision eager vs torchvision's own ONNX export vs edgevision's graph.

    python benchmarks/two_stage.py            # writes benchmarks/results/two_stage.{json,md}

fasterrcnn_mobilenet_v3_large_320_fpn and maskrcnn_resnet50_fpn at 320x320 and 640x640, batch 1,
FP32, interleaved rounds (Mask R-CNN: masks pasted into the image by every contender). In each round a
contender runs 3 times in a row and the last 2 are timed: steady-state latency, as in a camera loop
(the first call after another contender finds its weights evicted from the caches).
  - torchvision eager: model([image tensor]) with its transform set to the benchmark size
    (so it normalises and does not resize), torch.inference_mode;
  - torchvision ONNX: the whole model exported by torch.onnx (TorchScript exporter, opset 17, the
    path torchvision documents), run in ONNX Runtime and OpenVINO (f32 hint);
  - edgevision: `edgevision compile` (dynamo export, one graph with the NMS fused; batch fixed at 1
    as in torchvision's export: export.dynamic_batch false), run with Predictor.predict(image) on
    ONNX Runtime and OpenVINO: numpy pre-processing, inference, post-processing.
Every variant takes the same uint8 image and returns boxes in its pixels. Random weights with
BatchNorm statistics re-estimated (pretrained weights cannot be downloaded here). At torchvision's
default score threshold (0.05) such a model keeps the maximum of 100 detections, so Mask R-CNN runs
its mask head 100 times; a trained model on a real image keeps far fewer. Mask R-CNN is therefore
also timed at 320 with score threshold 0.69 for every contender, which leaves a trained model's handful.
Parity of edgevision's graph against torchvision eager is in tests/test_two_stage.py.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgevision import load  # noqa: E402
from edgevision.verify.latency import interleaved, summarize  # noqa: E402
from edgevision.bench.machine import machine  # noqa: E402
from edgevision.data import ShapesDataset  # noqa: E402
from edgevision.models.sources import build_model  # noqa: E402
from edgevision.recipe import ModelSpec  # noqa: E402
from whole_graph import compile_random_weights, contenders, export_whole  # noqa: E402

OUT = Path(__file__).parent / "results"
ROUNDS = int(os.environ.get("ROUNDS", "10"))
MODELS = {"fasterrcnn_mobilenet_v3_large_320_fpn": "detection", "maskrcnn_resnet50_fpn": "instance_segmentation"}
SIZES = (320, 640)
# (model, score threshold, sizes): torchvision's default threshold, and for Mask R-CNN one that leaves
# a trained model's handful of detections (these random weights score all 100 between 0.62 and 0.75 at 320)
RUNS = [("fasterrcnn_mobilenet_v3_large_320_fpn", 0.05, SIZES), ("maskrcnn_resnet50_fpn", 0.05, SIZES),
        ("maskrcnn_resnet50_fpn", 0.69, (320,))]
BLOCK = 3
LABELS = ["background", "circle", "square", "triangle"]



def bench(source: str, size: int, score: float, root: Path) -> dict:
    name = f"{source}-{size}-{score}"
    data = {"name": name, "task": MODELS[source], "model": {"source": source, "labels": LABELS},
            "input": {"size": [size, size]}, "export": {"dynamic_batch": False, "nms": {"score_threshold": score}},
            "targets": [{"backend": "onnxruntime"}, {"backend": "openvino"}],
            "verify": {"images": 2, "timing_rounds": 0}, "output": str(root / name)}
    manifest, compile_s = compile_random_weights(data, root)
    model = build_model(ModelSpec(**data["model"]))
    model.transform.min_size, model.transform.max_size = (size,), size  # no resize: same input as ours
    model.roi_heads.score_thresh = score
    whole = root / f"whole-{name}.onnx"
    export_whole(model, whole, size)
    ours = {b: load(root / name / f"{b}-fp32") for b in ("onnxruntime", "openvino")}
    image = ShapesDataset(1, seed=11, size=(size, size))[0].image
    failures: dict = {}
    fns = contenders(model, whole, ours, image, "edgevision", failures)
    e2e = {k: summarize(v) for k, v in interleaved(fns, ROUNDS, warmup=2, block=BLOCK).items()}
    with torch.inference_mode():
        detections = len(model([torch.from_numpy(image).permute(2, 0, 1).float() / 255])[0]["boxes"])
    return {"model": source, "size": size, "score_threshold": score, "detections": detections, "e2e_ms": e2e, "failures": failures, "compile_seconds": round(compile_s, 1),
            "ops": manifest["export"]["ops"], "nodes": manifest["export"]["nodes"],
            "parity_vs_pytorch": {v["name"]: v["parity"] for v in manifest["variants"]}}


def markdown(results: list, info: dict) -> str:
    lines = ["# Faster / Mask R-CNN end to end (batch 1, FP32)", "",
             f"Machine: {info['cpu']}, {info['cores']} cores ({' '.join(info['isa'])}), {info['threads']} threads; "
             f"{ROUNDS} interleaved rounds of {BLOCK} calls per contender (the last {BLOCK - 1} timed: steady state); "
             f"{info['seconds']:.0f} s in all. Random weights (BatchNorm re-estimated).", ""]
    for r in results:
        e = r["e2e_ms"]
        eager = e["torchvision eager"]["p50"]
        lines += [f"## {r['model']} at {r['size']}x{r['size']}, score threshold {r['score_threshold']} "
                  f"({r['detections']} detections)", "",
                  "| end to end | p50 ms | p90 ms | min ms | max ms | vs torchvision eager |", "|---|---|---|---|---|---|"]
        lines += [f"| {k} | {v['p50']:.1f} | {v['p90']:.1f} | {v['min']:.1f} | {v['max']:.1f} | {eager / v['p50']:.2f}x |"
                  for k, v in e.items()]
        lines += [f"| {k} | failed: {why} | | | | |" for k, why in r.get("failures", {}).items()]
        ops = r["ops"]
        lines += ["", f"edgevision graph: {r['nodes']} nodes, {ops.get('RoiAlign', 0)} RoiAlign, "
                  f"{ops.get('NonMaxSuppression', 0)} NonMaxSuppression, no Loop/If; compiled in {r['compile_seconds']} s.", ""]
    return "\n".join(lines)


def main() -> None:
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    OUT.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results = [bench(source, size, score, Path(tmp)) for source, score, sizes in RUNS for size in sizes]
    info = machine(threads)
    info["seconds"] = round(time.perf_counter() - start, 1)
    (OUT / "two_stage.json").write_text(json.dumps({"machine": info, "rounds": ROUNDS, "block": BLOCK, "results": results}, indent=2) + "\n")
    (OUT / "two_stage.md").write_text(markdown(results, info) + "\n")
    print(markdown(results, info))


if __name__ == "__main__":
    main()
