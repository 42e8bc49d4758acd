"""Does tests/test_two_stage.py's trained Faster R-CNN fixture hold whatever a short training gives?

The fixture trains fasterrcnn_mobilenet_v3_large_320_fpn for 48 steps, then sets the recipe's NMS score
threshold in a gap of the trained model's own scores (tests/oracles.threshold_in_a_gap), so the
verification images hold detections by construction. This runs the same recipe for several training
seeds and torch thread counts (the outcome of 48 steps moves with both, as it moves with the CPU's
arithmetic), and for each records the learning ratio, the threshold, the detections and the parity of
the ONNX Runtime and OpenVINO FP32 variants against torchvision eager, as the test asserts them.

    python benchmarks/trained_fixture_sweep.py [--seeds 0 1 2] [--threads 1 2]
Writes benchmarks/results/trained_fixture_sweep.{json,md} with the CPU and its ISA flags.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import edgevision  # noqa: E402
from conftest import Quiet, recipe_dict  # noqa: E402
from edgevision import api  # noqa: E402
from edgevision.bench.machine import cpu_name, isa_flags  # noqa: E402
from edgevision.data.shapes import ShapesDataset  # noqa: E402
from edgevision.models.sources import build_model  # noqa: E402
from edgevision.recipe import ModelSpec, parse_recipe  # noqa: E402
from edgevision.records import InputSpec  # noqa: E402
from edgevision.runtime.preprocess import preprocess  # noqa: E402
from edgevision.verify.parity import compare_detections  # noqa: E402
from oracles import as_contract, threshold_in_a_gap, torchvision_scores, torchvision_two_stage  # noqa: E402


def one(seed: int, threads: int, root: Path) -> dict:
    torch.set_num_threads(threads)
    name = f"frcnn-s{seed}-t{threads}"
    data = recipe_dict(name, "detection", "fasterrcnn_mobilenet_v3_large_320_fpn", 192, root,
                       model={"kwargs": {"box_batch_size_per_image": 64}, "checkpoint": str(root / f"{name}.pt")},
                       data={"train": {"source": "shapes", "count": 192, "seed": 0}})
    data["train"] = {"epochs": 2, "batch": 8, "lr": 0.002, "seed": seed}
    start = time.perf_counter()
    api.train(parse_recipe(data), reporter=Quiet())
    model = build_model(ModelSpec(**data["model"]))
    spec = InputSpec.from_dict(data["input"])
    val = ShapesDataset(4, seed=1, size=(192, 192), max_objects=3)
    batch = ShapesDataset(3, seed=21, size=(192, 192))
    groups = [torchvision_scores(model, [d.image for d in ds], spec) for ds in (val, batch)]
    top = max(float(s.max(initial=0)) for g in groups for s in g)
    default_count = sum(int((s > 0.05).sum()) for g in groups for s in g)
    threshold, gap = threshold_in_a_gap(groups, minimum=[4, 3], most=40)
    data["export"] = {"nms": {"score_threshold": threshold}}
    manifest = api.compile(parse_recipe(data), reporter=Quiet(), threads=threads)
    meta = torch.load(data["model"]["checkpoint"], weights_only=True)["edgevision"]
    model.roi_heads.score_thresh = threshold
    x = preprocess([batch[i].image for i in range(3)], spec)[0]
    with torch.no_grad():
        expected = as_contract(torchvision_two_stage(model, torch.from_numpy(x)), manifest["nms"]["max_detections"])
    parity = {}
    for variant in ("onnxruntime-fp32", "openvino-fp32"):
        with edgevision.load(root / name / variant) as p:
            m = compare_detections([expected], [p.runner.infer({"images": x})])
        parity[variant] = {k: m[k] for k in ("detections", "matched", "matched_candidate", "max_score_diff")}
    return {"seed": seed, "threads": threads, "loss_ratio": round(meta["final_loss"] / meta["initial_loss"], 3),
            "top_score": round(top, 4), "detections_at_0.05": default_count, "threshold": round(threshold, 5),
            "gap": round(gap, 5), "compile": [v["status"] for v in manifest["variants"]],
            "compile_parity": [v["parity"]["matched"] for v in manifest["variants"]], "parity": parity,
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    flags = isa_flags()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for threads in args.threads:
                rows.append(one(seed, threads, Path(tmp)))
                print(json.dumps(rows[-1]), flush=True)
    out = ROOT / "benchmarks" / "results" / "trained_fixture_sweep"
    out.with_suffix(".json").write_text(json.dumps({"cpu": cpu_name(), "isa": flags, "rows": rows}, indent=1) + "\n")
    lines = ["# Trained Faster R-CNN fixture: seeds x threads\n", f"CPU: {cpu_name()}; ISA: {' '.join(flags)}\n",
             "| seed | threads | loss ratio | top score | dets > 0.05 | threshold (gap) | compile | ORT dets / matched | "
             "OV dets / matched |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        o, v = r["parity"]["onnxruntime-fp32"], r["parity"]["openvino-fp32"]
        lines.append(f"| {r['seed']} | {r['threads']} | {r['loss_ratio']} | {r['top_score']} | {r['detections_at_0.05']} | "
                     f"{r['threshold']} ({r['gap']}) | {', '.join(r['compile'])} | {o['detections']} / {o['matched']} | "
                     f"{v['detections']} / {v['matched']} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
