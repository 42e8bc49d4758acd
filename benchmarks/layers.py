"""Per-layer-type time of the published MobileNetV3-style models on OpenVINO and ONNX Runtime
(issue 14): where each engine spends a batch-1 inference.

    python benchmarks/layers.py                      # ssdlite320, lraspp-mnv3, mobilenet-v3-large
    python benchmarks/layers.py --only ssdlite320 --runs 30

For each model (benchmarks/published.py's artifact) and each variant built here: OpenVINO FP32,
BF16 and INT8 compiled for the static input shape with PERF_COUNT (real time summed per layer type
and per executed kernel precision), and ONNX Runtime FP32 and INT8 with its profiler (kernel time
per op type; spinning off so the profile is the kernel's own). Input: sklearn's china.jpg through
edgevision's pre-processing. Results: benchmarks/results/layers.json and layers.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Dict

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import numpy as np  # noqa: E402

from edgevision.artifact import read_manifest  # noqa: E402
from edgevision.console import RichReporter  # noqa: E402
from edgevision.runtime.preprocess import preprocess  # noqa: E402
from published import artifact_for  # noqa: E402
from record import record  # noqa: E402

TOP = 8


def _openvino(xml: Path, precision_hint: str, feed: np.ndarray, runs: int, threads: int) -> Dict[str, Any]:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(xml))
    model.reshape({model.inputs[0].get_any_name(): list(feed.shape)})
    compiled = core.compile_model(model, "CPU", {"PERF_COUNT": "YES", "INFERENCE_PRECISION_HINT": precision_hint,
                                                 "INFERENCE_NUM_THREADS": str(threads), "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    for _ in range(5):
        request.infer({0: feed})
    by_type: Counter = Counter()
    by_kernel: Counter = Counter()
    for _ in range(runs):
        request.infer({0: feed})
        for info in request.profiling_info:
            ms = info.real_time.total_seconds() * 1000 / runs
            by_type[info.node_type] += ms
            by_kernel[info.exec_type.split("_")[-1]] += ms  # e.g. jit_avx512_amx_I8 -> I8
    return {"total_ms": round(sum(by_type.values()), 3), "by_layer_type": _top(by_type), "by_precision": _top(by_kernel)}


def _onnxruntime(path: Path, feed: np.ndarray, runs: int, threads: int, tmp: Path) -> Dict[str, Any]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.enable_profiling, opts.profile_file_prefix = True, str(tmp / path.parent.name)
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        sess.run(None, {"images": feed})
    by_op: Counter = Counter()
    for event in json.loads(Path(sess.end_profiling()).read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"]["op_name"]] += event["dur"] / 1000 / runs
    return {"total_ms": round(sum(by_op.values()), 3), "by_layer_type": _top(by_op)}


def _top(counter: Counter) -> Dict[str, float]:
    return {k: round(v, 3) for k, v in counter.most_common(TOP)}


def run_model(name: str, runs: int, threads: int, tmp: Path) -> Dict[str, Any]:
    from sklearn.datasets import load_sample_image

    root = artifact_for(name, RichReporter())
    manifest = read_manifest(root)
    feed = preprocess([load_sample_image("china.jpg")], manifest.info.input)[0]
    built = {v.name for v in manifest.variants if v.status != "error"}
    out: Dict[str, Any] = {}
    for variant, hint in (("openvino-fp32", "f32"), ("openvino-bf16", "bf16"), ("openvino-int8", "f32")):
        if variant in built:
            out[variant] = _openvino(root / variant / "model.xml", hint, feed, runs, threads)
    for variant in ("onnxruntime-fp32", "onnxruntime-int8"):
        if variant in built:
            out[variant] = _onnxruntime(root / variant / "model.onnx", feed, runs, threads, tmp)
    return {"model": name, "input_size": list(manifest.info.input.size), "variants": out}


def markdown(report: Dict[str, Any]) -> str:
    m = report["machine"]
    lines = ["# Where each engine spends a batch-1 inference, by layer type", "",
             f"`python benchmarks/layers.py --runs {report['runs']}`, {report['seconds'] / 60:.1f} min on {m['cpu']} "
             f"({report['threads']} threads; ISA {' '.join(m['isa'])}); load {report['load_before']} before, "
             f"{report['load_after']} after. OpenVINO: PERF_COUNT real time (static shape); ONNX Runtime: profiler kernel "
             f"time. Milliseconds per inference, the {TOP} largest layer types; totals exclude framework overhead.", ""]
    for r in report["models"]:
        lines += [f"## {r['model']} ({r['input_size'][0]}x{r['input_size'][1]})", "", "| variant | total ms | by layer type "
                  "| by kernel precision |", "|---|---|---|---|"]
        for variant, p in r["variants"].items():
            kinds = ", ".join(f"{k} {v:.2f}" for k, v in p["by_layer_type"].items())
            prec = ", ".join(f"{k} {v:.2f}" for k, v in (p.get("by_precision") or {}).items()) or "-"
            lines.append(f"| {variant} | {p['total_ms']:.2f} | {kinds} | {prec} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only", default="ssdlite320,lraspp-mnv3,mobilenet-v3-large")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        record("layers", args.threads, {"runs": args.runs},
               lambda: [run_model(n, args.runs, args.threads, Path(tmp)) for n in args.only.split(",")], markdown)


if __name__ == "__main__":
    main()
