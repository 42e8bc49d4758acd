"""Faster R-CNN parity: edgevision's one-graph export on ONNX Runtime and OpenVINO (FP32) against
torchvision eager (its own RPN and RoI heads on the same tensors), per model.

    python benchmarks/two_stage_parity.py     # writes benchmarks/results/two_stage_parity.{json,md}

Random weights with BatchNorm statistics re-estimated, box score threshold lowered to 0.01 so that
every image yields its full 100 detections; 4 images, run as one batch of 4 (batch > 1).
Matched: the share of torchvision's detections that the backend reproduces (same label, IoU > 0.99,
order-free), and the other way round; score diff: the largest difference over matched pairs.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "tests")]

from edgevision import load  # noqa: E402
from edgevision.bench.machine import machine  # noqa: E402
from edgevision.data import ShapesDataset  # noqa: E402
from edgevision.models.sources import build_model  # noqa: E402
from edgevision.recipe import ModelSpec  # noqa: E402
from edgevision.records import InputSpec  # noqa: E402
from edgevision.runtime.preprocess import preprocess  # noqa: E402
from oracles import as_contract, torchvision_two_stage  # noqa: E402 - tests/oracles.py
from edgevision.verify.parity import compare_detections  # noqa: E402
from whole_graph import compile_random_weights  # noqa: E402

OUT = Path(__file__).parent / "results"
MODELS = {"fasterrcnn_mobilenet_v3_large_320_fpn": 320, "fasterrcnn_mobilenet_v3_large_fpn": 320,
          "fasterrcnn_resnet50_fpn": 320, "fasterrcnn_resnet50_fpn_v2": 320}
LABELS = ["background", "circle", "square", "triangle"]
THRESHOLD = 0.01



def check(source: str, size: int, root: Path) -> list:
    data = {"name": source, "task": "detection", "model": {"source": source, "labels": LABELS},
            "input": {"size": [size, size]}, "export": {"nms": {"score_threshold": THRESHOLD}},
            "targets": [{"backend": "onnxruntime"}, {"backend": "openvino"}],
            "verify": {"images": 2, "timing_rounds": 0}, "output": str(root / source)}
    manifest, seconds = compile_random_weights(data, root)
    model = build_model(ModelSpec(**data["model"]))
    model.roi_heads.score_thresh = THRESHOLD
    shapes = ShapesDataset(4, seed=21, size=(size, size))
    batch = preprocess([shapes[i].image for i in range(4)], InputSpec.from_dict(manifest["input"]))[0]
    with torch.no_grad():
        expected = as_contract(torchvision_two_stage(model, torch.from_numpy(batch)), manifest["nms"]["max_detections"])
    rows = []
    for backend in ("onnxruntime", "openvino"):
        with load(root / source / f"{backend}-fp32") as predictor:
            m = compare_detections([expected], [predictor.runner.infer({"images": batch})])
        rows.append({"model": source, "size": size, "backend": backend, "detections": m["detections"],
                     "matched": m["matched"], "matched_candidate": m["matched_candidate"],
                     "max_score_diff": m["max_score_diff"], "max_box_diff": m.get("max_box_diff"),
                     "compile_seconds": round(seconds, 1), "ops": {k: v for k, v in manifest["export"]["ops"].items()
                                                                 if k in ("RoiAlign", "NonMaxSuppression", "TopK")}})
    return rows


def main() -> None:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [r for name, size in MODELS.items() for r in check(name, size, Path(tmp))]
    info = machine(torch.get_num_threads())
    info["seconds"] = round(time.perf_counter() - start, 1)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "two_stage_parity.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=2) + "\n")
    lines = ["# Faster R-CNN parity against torchvision eager (FP32, batch of 4, random weights)", "",
             f"`python benchmarks/two_stage_parity.py`, {info['seconds']:.0f} s. Score threshold {THRESHOLD}.", "",
             "| model | input | backend | torchvision detections | matched | matched (other way) | max score diff | "
             "max box diff px | RoiAlign / NMS ops |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['size']} | {r['backend']} | {r['detections']} | {r['matched']:.4f} | "
                     f"{r['matched_candidate']:.4f} | {r['max_score_diff']:.1e} | {r['max_box_diff']:.1e} | "
                     f"{r['ops'].get('RoiAlign', 0)} / {r['ops'].get('NonMaxSuppression', 0)} |")
    (OUT / "two_stage_parity.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
