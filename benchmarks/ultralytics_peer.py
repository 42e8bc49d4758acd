"""The race against Ultralytics' own export: the same YOLOv8n (or YOLO26n) checkpoint, exported by
Ultralytics (format=onnx, format=openvino, openvino int8=True, openvino nms=True) and run through
Ultralytics' own predictor, against edgevision's artifacts through `edgevision.load(...).predict`, end
to end (a decoded 640x480 frame in, boxes in original pixels out), interleaved in one process.

    python benchmarks/ultralytics_peer.py [--model yolov8n|yolo26n] [--epochs 20] [--rounds 5] [--sizes 320 640]

YOLO26n races end to end (its NMS-free one-to-one branch): edgevision's `export.end2end: true`
against Ultralytics' exports and predictor with `nms=False` (their NMS-free path); its openvino-nms
export is Ultralytics' one-to-many branch with the NMS embedded.

1. Trains the model (Ultralytics, CPU, 160x160, 1000 shapes images written in Ultralytics' format;
   first run only, about 10 minutes on 2 cores).
2. Accuracy at 160: Ultralytics' `val` (conf 0.001, IoU 0.7) against edgevision's compile of the
   same checkpoint with the validator's NMS (score 0.001, multi_label), on the same 100 images.
3. Speed at each size: both sides with Ultralytics' predict defaults (conf 0.25, IoU 0.7, max_det 300).
Blocks of `calls` calls per contender, contenders interleaved, `rounds` rounds: the median of the
block medians, and the spread (max-min)/median. Results: results/ultralytics_peer.{json,md} (YOLOv8n),
results/ultralytics_peer_yolo26n.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("YOLO_OFFLINE", "True")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]

import numpy as np  # noqa: E402
import torch  # noqa: E402

import edgevision  # noqa: E402
from edgevision import api  # noqa: E402
from edgevision.data.shapes import ShapesDataset  # noqa: E402
from edgevision.recipe import parse_recipe  # noqa: E402
from conftest import Quiet  # noqa: E402
from record import record  # noqa: E402
from yolo_data import write_yolo_dataset  # noqa: E402

WORK = ROOT / "build" / "ultralytics-peer"
MODEL = "yolov8n"
END2END = {"yolov8n": False, "yolo26n": True}  # which branch races (False: one-to-many + NMS; True: NMS-free)
THREADS = 2
OURS = ["onnxruntime-fp32", "openvino-fp32", "openvino-bf16", "onnxruntime-int8", "openvino-int8"]


TRAIN_SIZE = 160


def train(data: Path, epochs: int) -> Path:
    from ultralytics import YOLO

    best = WORK / "train" / "weights" / "best.pt"
    if not best.is_file():
        YOLO(f"{MODEL}.yaml").train(data=str(data), epochs=epochs, imgsz=TRAIN_SIZE, batch=16, device="cpu", workers=0,
                                   project=str(WORK), name="train", exist_ok=True, plots=False, amp=False, seed=0)
    return best


def recipe(name: str, ckpt: Path, size: int, accuracy: bool) -> Dict[str, Any]:
    nms = {"score_threshold": 0.001, **({} if END2END[MODEL] else {"multi_label": True})} if accuracy else {}
    targets = [{"backend": b, "precision": p} for b, p in (v.split("-") for v in OURS)]
    return {"name": name, "task": "detection",
            "model": {"source": "ultralytics", "checkpoint": str(ckpt), "trust_checkpoint": True},
            "input": {"size": size}, "export": {"nms": nms, **({"end2end": True} if END2END[MODEL] else {})},
            "data": {"val": {"source": "shapes", "count": 100, "seed": 1}},
            "calibration": {"source": "shapes", "count": 300, "seed": 7},
            "targets": targets if not accuracy else targets[:1] + targets[3:],
            "verify": {"images": 8, "timing_rounds": 5}, "output": str(WORK / name)}


def ultralytics_exports(best: Path, size: int, data: Path) -> Dict[str, Path]:
    """Ultralytics' own exports of the checkpoint (each from its own copy, so their files do not collide)."""
    from ultralytics import YOLO

    out: Dict[str, Path] = {}
    branch = {"nms": False} if END2END[MODEL] else {}  # nms=False: Ultralytics' NMS-free (one-to-one) export
    for name, kwargs in (("onnx", {"format": "onnx", **branch}), ("openvino", {"format": "openvino", **branch}),
                         ("openvino-int8", {"format": "openvino", "int8": True, "data": str(data), **branch}),
                         ("openvino-nms", {"format": "openvino", "nms": True})):
        copy = WORK / f"u{size}-{name}.pt"
        done = [p for p in WORK.glob(f"u{size}-{name}[._]*") if p.suffix != ".pt"]
        if done and copy.is_file() and copy.stat().st_mtime >= best.stat().st_mtime:  # exported from this checkpoint
            out[name] = done[0]
            continue
        shutil.copy(best, copy)
        out[name] = Path(YOLO(str(copy)).export(imgsz=size, device="cpu", **kwargs))
    return out


def compile_once(spec: Any) -> tuple[Dict[str, Any], Path]:
    """The recipe's artifact and its folder: compiled unless it exists from this very recipe (same digest).
    A compile where a variant failed (e.g. INT8 beyond the accuracy gate) is a result too: its manifest
    and folder are `<output>.failed` (only passed variants race)."""
    from edgevision.artifact import read_manifest
    from edgevision.errors import EdgeVisionError, VerificationFailed

    failed = spec.output_dir.with_name(spec.output_dir.name + ".failed")
    for folder in (spec.output_dir, failed):
        try:
            manifest = read_manifest(folder)
            if manifest.recipe["sha256"] == spec.digest():
                return manifest.to_json(), folder  # as api.compile returns it
        except EdgeVisionError:
            pass
    try:
        return api.compile(spec, reporter=Quiet(), threads=THREADS), spec.output_dir
    except VerificationFailed:
        return read_manifest(failed).to_json(), failed


def block(call: Callable[[], Any], n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def race(contenders: Dict[str, Callable[[], Any]], rounds: int, calls: int) -> Dict[str, Dict[str, float]]:
    for call in contenders.values():
        block(call, 10)  # warm-up
    samples: Dict[str, List[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, call in contenders.items():
            samples[name].append(block(call, calls))
    out = {}
    for name, values in samples.items():
        med = statistics.median(values)
        out[name] = {"p50_ms": round(med, 2), "spread": round((max(values) - min(values)) / med, 3)}
    return out


def contenders(best: Path, size: int, data: Path, frame: np.ndarray) -> Dict[str, Callable[[], Any]]:
    from ultralytics import YOLO

    theirs = {"ultralytics pytorch": YOLO(str(best))}
    theirs.update({f"ultralytics {k}": YOLO(str(v), task="detect") for k, v in ultralytics_exports(best, size, data).items()})
    branch = {"nms": False} if END2END[MODEL] else {}  # the PyTorch predictor on the branch that races
    out: Dict[str, Callable[[], Any]] = {
        k: (lambda m=m, b=(branch if k == "ultralytics pytorch" else {}): m.predict(
            frame, imgsz=size, conf=0.25, iou=0.7, max_det=300, device="cpu", verbose=False, **b))
        for k, m in theirs.items()}
    manifest, folder = compile_once(parse_recipe(recipe(f"{MODEL}-speed-{size}", best, size, accuracy=False)))
    for v in (v["name"] for v in manifest["variants"] if v["status"] == "passed"):
        model = edgevision.load(folder, v, threads=THREADS)
        out[f"edgevision {v}"] = lambda m=model: m.predict(frame, channel_order="bgr")
    return out


def engines(size: int, frame: np.ndarray, rounds: int, calls: int) -> Dict[str, Any]:
    """Engine only, same input tensor: edgevision's OpenVINO variants against Ultralytics' OpenVINO IRs
    compiled as Ultralytics compiles them (LATENCY hint, OpenVINO's default precision: BF16 on a CPU
    with AMX, although the export is called FP32)."""
    import openvino as ov

    core, out = ov.Core(), {}
    folder = next(f for f in (WORK / f"{MODEL}-speed-{size}", WORK / f"{MODEL}-speed-{size}.failed") if f.is_dir())
    ours = {v: edgevision.load(folder, v, threads=THREADS) for v in ("openvino-bf16", "openvino-int8")}
    from edgevision.artifact import read_manifest

    verified = {v.name: v.status == "passed" for v in read_manifest(folder).variants}
    feeds, _ = ours["openvino-bf16"].feeds([frame], bgr=True)
    calls_by_name: Dict[str, Callable[[], Any]] = {f"edgevision {k}": (lambda m=m: m.runner.infer(feeds)) for k, m in ours.items()}
    precisions = {}
    for name in ("openvino", "openvino-nms", "openvino-int8"):
        folder = next(WORK.glob(f"u{size}-{name}_*openvino_model"))  # as ultralytics_exports wrote it
        xml = next(folder.glob("*.xml"))
        compiled = core.compile_model(str(xml), "CPU", {"PERFORMANCE_HINT": "LATENCY"})
        precisions[f"ultralytics {name}"] = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        request, x = compiled.create_infer_request(), feeds[ours["openvino-bf16"].input_name]
        calls_by_name[f"ultralytics {name}"] = lambda r=request, x=x: r.infer({0: x})
    for name, result in race(calls_by_name, rounds, calls).items():
        extra = {"inference_precision": precisions[name]} if name in precisions else {
            "verified": verified[name.split(" ", 1)[1]]}  # ours: whether the compile passed it at this size
        out[name] = {**result, **extra}
    return out


def accuracy(best: Path, data: Path) -> Dict[str, Any]:
    from ultralytics import YOLO

    branch = {"nms": False} if END2END[MODEL] else {}
    metrics = YOLO(str(best)).val(data=str(data), imgsz=TRAIN_SIZE, batch=16, conf=0.001, iou=0.7, device="cpu", plots=False,
                                  **branch)
    manifest, _ = compile_once(parse_recipe(recipe(f"{MODEL}-accuracy", best, TRAIN_SIZE, accuracy=True)))
    ours = {v["name"]: round(v["accuracy"]["map"], 4) for v in manifest["variants"] if v.get("accuracy")}
    return {"ultralytics_val_map": round(float(metrics.box.map), 4), "edgevision_map": ours,
            "edgevision_pytorch_map": round(manifest["baseline"]["accuracy"]["map"], 4),
            "edgevision_status": {v["name"]: v["status"] for v in manifest["variants"]}}


def markdown(report: Dict[str, Any]) -> str:
    m = report["machine"]
    title = report["model"] + (" (NMS-free one-to-one branch: edgevision end2end, Ultralytics nms=False)"
                               if END2END[report["model"]] else "")
    lines = [f"# edgevision vs Ultralytics' own export: {title}, end to end", "",
             f"Machine: {m.get('cpu')}, {m.get('cores')} cores, ISA {' '.join(m.get('isa') or [])} "
             f"({report['threads']} threads); load {report['load_before']} -> "
             f"{report['load_after']}; {report['rounds']} rounds of {report['calls']} calls, contenders interleaved. "
             "A 640x480 decoded frame in, boxes in original pixels out; both sides conf 0.25, IoU 0.7, max_det 300. "
             "Ultralytics' `format=openvino` export is called FP32 but runs in OpenVINO's default inference precision, "
             "BF16 on a CPU with AMX or AVX512-BF16 (the engine table shows it); edgevision's openvino-fp32 runs in FP32. "
             "Only variants that passed the compile's verification at that size race (parity and the 1-point "
             "accuracy gate on 100 shapes images).",
             ""]
    acc = report["accuracy"]
    lines += [f"Accuracy at 160x160 on the same 100 shapes images (mAP@[.5:.95]): Ultralytics val {acc['ultralytics_val_map']}, "
              f"edgevision PyTorch reference {acc['edgevision_pytorch_map']}, variants "
              + ", ".join(f"{k} {v}" + ("" if acc.get("edgevision_status", {}).get(k, "passed") == "passed" else
                                          f" ({acc['edgevision_status'][k]})")
                          for k, v in acc["edgevision_map"].items()), ""]
    for size, results in report["speed"].items():
        best_theirs = min(v["p50_ms"] for k, v in results.items() if k.startswith("ultralytics"))
        lines += [f"## {size}x{size}", "", "| contender | p50 ms | spread | vs Ultralytics' best |", "|---|---|---|---|"]
        for k, v in sorted(results.items(), key=lambda kv: kv[1]["p50_ms"]):
            lines.append(f"| {k} | {v['p50_ms']} | {v['spread']:.1%} | {best_theirs / v['p50_ms']:.2f}x |")
        lines.append("")
    for size, results in report.get("engine", {}).items():
        lines += [f"Engine only at {size}x{size} (same input tensor; no pre- or post-processing):", "",
                  "| engine | p50 ms | spread | runs in |", "|---|---|---|---|"]
        for k, v in sorted(results.items(), key=lambda kv: kv[1]["p50_ms"]):
            runs_in = v.get("inference_precision", k.split("-")[-1]) + ("" if v.get("verified", True) else
                                                                        " (failed verification at this size)")
            lines.append(f"| {k} | {v['p50_ms']} | {v['spread']:.1%} | {runs_in} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(END2END), default="yolov8n")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--sizes", type=int, nargs="+", default=[320, 640])
    args = parser.parse_args()
    global MODEL, WORK
    MODEL = args.model
    WORK = WORK if MODEL == "yolov8n" else WORK / MODEL
    torch.set_num_threads(THREADS)
    WORK.mkdir(parents=True, exist_ok=True)
    data = write_yolo_dataset(WORK / "data", TRAIN_SIZE, {"train": (1000, 0), "val": (100, 1)})
    best = train(data, args.epochs)
    frame = np.ascontiguousarray(ShapesDataset(1, seed=11, size=(480, 640))[0].image[:, :, ::-1])  # BGR, as a camera

    report: Dict[str, Any] = {"model": MODEL, "rounds": args.rounds, "calls": args.calls}

    def measure() -> List[Dict[str, Any]]:  # inside record(): the load average is taken around it
        report.update(accuracy=accuracy(best, data), speed={}, engine={})
        for size in args.sizes:
            report["speed"][str(size)] = race(contenders(best, size, data, frame), args.rounds, args.calls)
            report["engine"][str(size)] = engines(size, frame, args.rounds, args.calls)
        return [{"model": MODEL, "checkpoint": str(best.relative_to(ROOT))}]

    record("ultralytics_peer" + ("" if MODEL == "yolov8n" else f"_{MODEL}"), THREADS, report, measure, markdown)


if __name__ == "__main__":
    main()
