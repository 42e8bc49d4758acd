"""Fused NMS vs torchvision's exported post-processing, end to end, at 320x320.

For SSDlite and RetinaNet (random weights, BatchNorm statistics re-estimated, torchvision's own
thresholds), times end to end (image array in, detections out), interleaved:
  torchvision eager            model([image]) with its own transform and post-processing
  torchvision ONNX (ORT / OV)  the whole model exported by torch.onnx (TorchScript exporter; the
                               dynamo exporter cannot export these models)
  edgevision (ORT / OV)        backbone + head + in-graph decode + one fused NMS, via the runtime
and splits edgevision's time into pre-processing, inference and post-processing.

    python benchmarks/detection_nms.py            # writes benchmarks/results/detection_nms.{json,md}
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov
import torch
import torchvision

from edgevision import api, load
from edgevision.verify.latency import interleaved, summarize
from edgevision.bench.machine import machine
from edgevision.reporting import SilentReporter
from edgevision.data import ShapesDataset
from edgevision.export.detection import backbone_features
from edgevision.models.batchnorm import reestimate_batchnorm
from edgevision.recipe import parse_recipe
from edgevision.runtime.preprocess import preprocess
from whole_graph import contenders, export_whole

OUT = Path(__file__).parent / "results"
SIZE = 320
ROUNDS = int(os.environ.get("ROUNDS", "20"))
MODELS = {
    "ssdlite320_mobilenet_v3_large": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "retinanet_resnet50_fpn": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}



def realistic(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, weights_backbone=None)
    # torchvision's RetinaNet transform would upsample to 800 px: run every variant at 320
    model.transform.min_size, model.transform.max_size = (SIZE,), SIZE
    images = [ShapesDataset(4, seed=3, size=(SIZE, SIZE))[i].image for i in range(4)]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return reestimate_batchnorm(model, [x], lambda b: model.head(backbone_features(model, model.transform(list(b))[0].tensors)))


def compile_ours(name: str, model: torch.nn.Module, mean: tuple, std: tuple, root: Path) -> dict:
    ckpt = root / f"{name}.pt"
    torch.save(model.state_dict(), ckpt)
    recipe = parse_recipe({
        "name": name, "task": "detection",
        "model": {"source": name, "num_classes": 91, "checkpoint": str(ckpt)},
        "input": {"size": [SIZE, SIZE], "mean": list(mean), "std": list(std)},
        "targets": [{"backend": "onnxruntime"}, {"backend": "openvino"}],
        "verify": {"images": 2, "timing_rounds": 0},
        "output": str(root / name),
    })
    return api.compile(recipe, reporter=SilentReporter())


def bench(name: str, mean: tuple, std: tuple, root: Path) -> dict:
    model = realistic(name)
    image = ShapesDataset(1, seed=11, size=(SIZE, SIZE))[0].image
    whole_path = root / f"{name}.whole.onnx"
    whole_nodes = export_whole(model, whole_path, SIZE)
    manifest = compile_ours(name, model, mean, std, root)
    ours = {b: load(root / name / f"{b}-fp32") for b in ("onnxruntime", "openvino")}
    fns = contenders(model, whole_path, ours, image, "edgevision fused")
    e2e = {k: summarize(v) for k, v in interleaved(fns, ROUNDS, warmup=2).items()}
    core = ov.Core()
    tensors = root / f"{name}.tensors.onnx"  # our graph without decode-to-NMS: backbone + head + decode
    onnx.utils.extract_model(str(root / name / "model.onnx"), str(tensors), ["images"], ["boxes_pre_nms", "scores_pre_nms"])
    tensor_part = {"onnxruntime": ort.InferenceSession(str(tensors), providers=["CPUExecutionProvider"]),
                   "openvino": core.compile_model(core.read_model(str(tensors)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})}
    phases = {}
    for backend, predictor in ours.items():  # where edgevision's time goes
        feed = preprocess([image], predictor.input)[0]
        outputs = predictor.runner.infer({"images": feed})
        part = tensor_part[backend]
        run_part = (lambda f=feed, s=part: s.run(None, {"images": f})) if backend == "onnxruntime" else \
            (lambda f=feed, r=part.create_infer_request(): r.infer({"images": f}))
        timed = interleaved({
            "pre": lambda p=predictor: preprocess([image], p.input),
            "infer": lambda p=predictor, f=feed: p.runner.infer({"images": f}),
            "network": run_part,
            "post": lambda p=predictor, o=outputs: p.decode(o, preprocess([image], p.input)[1], top_k=5, scores=False),
        }, ROUNDS, warmup=2)
        phases[backend] = {k: summarize(v)["p50"] for k, v in timed.items()}
    nms_ops = sum(v for k, v in manifest["export"]["ops"].items() if k in ("NonMaxSuppression", "TopK"))
    return {
        "model": name, "e2e_ms": e2e, "phases_ms": phases,
        "nodes": {"torchvision_whole_graph": whole_nodes, "edgevision_exported": manifest["export"]["nodes_exported"],
                  "edgevision_final": manifest["export"]["nodes"], "edgevision_nms_and_topk_ops": nms_ops},
        "parity": {v["name"]: v["parity"] for v in manifest["variants"]},
        "nms": manifest["nms"],
    }


def markdown(results: list, info: dict) -> str:
    lines = [f"# Fused NMS vs torchvision's exported post-processing ({SIZE}x{SIZE}, batch 1)", "",
             f"Machine: {info['cpu']}, {info['cores']} cores ({', '.join(info['isa'])}); median of {ROUNDS} interleaved rounds, ms.", ""]
    for r in results:
        e = r["e2e_ms"]
        base = e["torchvision ONNX, onnxruntime"]["p50"]
        lines += [f"## {r['model']}", "", "| end to end | p50 ms | p90 ms | vs torchvision ONNX in ORT |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['p50']:.1f} | {v['p90']:.1f} | {base / v['p50']:.1f}x |" for k, v in e.items()]
        lines += ["", "| edgevision phases (p50 ms) | pre | infer | of which network | of which NMS | post | NMS + post share |",
                  "|---|---|---|---|---|---|---|"]
        for b, p in r["phases_ms"].items():
            total = p["pre"] + p["infer"] + p["post"]
            nms = max(p["infer"] - p["network"], 0.0)
            lines.append(f"| {b} | {p['pre']:.2f} | {p['infer']:.2f} | {p['network']:.2f} | {nms:.2f} | {p['post']:.2f} | "
                         f"{100 * (nms + p['post']) / total:.1f}% |")
        n = r["nodes"]
        lines += ["", f"Nodes: torchvision whole graph {n['torchvision_whole_graph']}; edgevision {n['edgevision_exported']} exported, "
                  f"{n['edgevision_final']} after cleanup with the NMS appended ({n['edgevision_nms_and_topk_ops']} NMS/TopK ops). "
                  f"NMS: {r['nms']}.", ""]
    return "\n".join(lines)


def main() -> None:
    torch.set_num_threads(os.cpu_count() or 1)
    OUT.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results = [bench(name, *norm, Path(tmp)) for name, norm in MODELS.items()]
    info = machine(torch.get_num_threads())
    info["seconds"] = round(time.perf_counter() - start, 1)
    (OUT / "detection_nms.json").write_text(json.dumps({"machine": info, "results": results}, indent=2, default=float) + "\n")
    (OUT / "detection_nms.md").write_text(markdown(results, info) + "\n")
    print(markdown(results, info))


if __name__ == "__main__":
    main()
