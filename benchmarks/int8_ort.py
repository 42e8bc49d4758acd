"""ONNX Runtime INT8 on MobileNetV3-style graphs: which quantization recipe beats FP32 (issue 14).

    python benchmarks/int8_ort.py                 # ssdlite320, lraspp-mnv3, mobilenet-v3-large
    python benchmarks/int8_ort.py --only ssdlite320 --rounds 40

For each model (the FP32 export of benchmarks/published.py's artifact, and its calibration set:
100 shapes images), builds the INT8 graph with several recipes and times every graph in ONNX
Runtime, interleaved in one process, engine only, batch 1:
- before: QDQ on every op type but no Q/DQ after weighted layers (edgevision's ONNX Runtime
  profile before this benchmark): ORT cannot fuse DQ -> Conv -> Q, so those convs run in float
  behind weights dequantized at every run
- now: as before, plus Q/DQ after weighted layers (the tail still reads float): edgevision's
  ONNX Runtime profile since this benchmark
- weighted-only: Q/DQ only around Conv / Gemm / MatMul (element-wise ops, h-swish and the SE
  blocks stay float), with output Q/DQ
- now-no-depthwise: as now, depthwise convolutions left in float
- now-preprocessed: as now, after onnxruntime's quant_pre_process
Sessions run without spinning threads (session.intra_op.allow_spinning 0): interleaved, a
spinning session steals the cores from the next one (measured: ORT FP32 SSDlite 6.6 ms alone with
spinning, 8.7 without; a non-spinning session timed right after a spinning one lost 15%).
Also the profile's count of DequantizeLinear / QuantizeLinear nodes after ORT's graph
optimisations (what is left unfused) and ORT's per-op-type profile of the best and the worst.
Results: benchmarks/results/int8_ort.json and int8_ort.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import numpy as np  # noqa: E402
import onnx  # noqa: E402

from edgevision.artifact import read_manifest  # noqa: E402
from edgevision.console import RichReporter  # noqa: E402
from edgevision.quantize.calibration import load_calibration  # noqa: E402
from edgevision.quantize.onnx_qdq import quantize_qdq  # noqa: E402
from edgevision.recipe import parse_recipe  # noqa: E402
from published import artifact_for  # noqa: E402
from record import record  # noqa: E402



def _depthwise(model: onnx.ModelProto) -> List[str]:
    shapes = {i.name: list(i.dims) for i in model.graph.initializer}
    out = []
    for n in model.graph.node:
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        if n.op_type == "Conv" and group > 1 and shapes.get(n.input[1], [0, 0])[1] == 1:
            out.append(n.name)
    return out


def _session(model: onnx.ModelProto, threads: int, profile: str = "") -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile:
        opts.enable_profiling, opts.profile_file_prefix = True, profile
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _left_qdq(model: onnx.ModelProto, threads: int, tmp: Path) -> Dict[str, int]:
    """Q/DQ nodes left after ORT's optimisations (a fused QLinearConv has none of its own)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.optimized_model_filepath = str(tmp / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    ops = Counter(n.op_type for n in onnx.load(str(tmp / "optimized.onnx")).graph.node)
    return {k: ops[k] for k in ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "Conv", "FusedConv")}


def _op_profile(model: onnx.ModelProto, feed: Dict[str, np.ndarray], threads: int, tmp: Path) -> Dict[str, float]:
    sess = _session(model, threads, str(tmp / "prof"))
    for _ in range(20):
        sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    total: Counter = Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            total[e["args"]["op_name"]] += e["dur"] / 1000 / 20
    return {k: round(v, 3) for k, v in total.most_common(8)}


def _photo(manifest: Dict[str, Any]) -> np.ndarray:
    from sklearn.datasets import load_sample_image

    from edgevision.runtime.preprocess import preprocess

    return preprocess([load_sample_image("china.jpg")], manifest.info.input)[0]


def run_model(name: str, rounds: int, threads: int, tmp: Path) -> Dict[str, Any]:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    root = artifact_for(name, RichReporter())
    manifest = read_manifest(root)
    recipe = parse_recipe(manifest.recipe["content"])
    calib = load_calibration(recipe.calibration_source, manifest.info.input, lambda m: None)
    fp32 = onnx.load(str(root / "model.onnx"))
    pre = tmp / f"{name}.pre.onnx"
    onnx.save_model(fp32, str(tmp / f"{name}.onnx"))
    quant_pre_process(str(tmp / f"{name}.onnx"), str(pre), skip_symbolic_shape=True)
    graphs = {
        "fp32": fp32,
        "int8 before": quantize_qdq(fp32, calib, "onnxruntime", cache=False, output_quantization=False)[0],
        "int8 now": quantize_qdq(fp32, calib, "onnxruntime", cache=False)[0],
        "int8 weighted-only": quantize_qdq(fp32, calib, "onnxruntime", cache=False, weighted_only=True)[0],
        "int8 now-no-depthwise": quantize_qdq(fp32, calib, "onnxruntime", exclude=_depthwise(fp32), cache=False)[0],
        "int8 now-preprocessed": quantize_qdq(onnx.load(str(pre)), calib, "onnxruntime", cache=False)[0],
    }
    feed = {"images": _photo(manifest)}
    sessions = {k: _session(m, threads) for k, m in graphs.items()}
    for s in sessions.values():
        for _ in range(5):
            s.run(None, feed)
    times: Dict[str, List[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, feed)
            times[k].append(1000 * (time.perf_counter() - t))
    rows = {}
    for k, m in graphs.items():
        p50 = statistics.median(times[k])
        rows[k] = {"p50_ms": round(p50, 3), "p90_ms": round(float(np.percentile(times[k], 90)), 3),
                   "vs_fp32": round(statistics.median(times["fp32"]) / p50, 3), "after_optimisation": _left_qdq(m, threads, tmp)}
    best = min((k for k in rows if k != "fp32"), key=lambda k: rows[k]["p50_ms"])
    profiles = {k: _op_profile(graphs[k], feed, threads, tmp) for k in dict.fromkeys(("fp32", "int8 before", "int8 now", best))}
    return {"model": name, "input_size": list(manifest.info.input.size), "depthwise_convs": len(_depthwise(fp32)),
            "rows": rows, "best": best, "op_profile_ms": profiles}


def markdown(report: Dict[str, Any]) -> str:
    m = report["machine"]
    lines = ["# ONNX Runtime INT8 recipes on MobileNetV3-style graphs", "",
             f"`python benchmarks/int8_ort.py --rounds {report['rounds']}`, {report['seconds'] / 60:.1f} min on {m['cpu']} "
             f"({report['threads']} threads; ISA {' '.join(m['isa'])}); engine only, batch 1, interleaved; "
             f"load {report['load_before']} before, {report['load_after']} after.", ""]
    for r in report["models"]:
        lines += [f"## {r['model']} ({r['input_size'][0]}x{r['input_size'][1]}, {r['depthwise_convs']} depthwise convs); "
                  f"fastest INT8: {r['best']}", "", "| graph | p50 ms | p90 ms | FP32 / this | left after ORT optimisation |",
                  "|---|---|---|---|---|"]
        for k, row in r["rows"].items():
            left = ", ".join(f"{a} {b}" for a, b in row["after_optimisation"].items() if b)
            lines.append(f"| {k} | {row['p50_ms']:.2f} | {row['p90_ms']:.2f} | {row['vs_fp32']:.2f}x | {left} |")
        lines += ["", "Per op type, ms per run (ORT profiler):", ""]
        for k, prof in r["op_profile_ms"].items():
            lines.append(f"- {k}: " + ", ".join(f"{op} {ms:.2f}" for op, ms in prof.items()))
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only", default="ssdlite320,lraspp-mnv3,mobilenet-v3-large")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        record("int8_ort", args.threads, {"rounds": args.rounds},
               lambda: [run_model(n, args.rounds, args.threads, Path(tmp)) for n in args.only.split(",")], markdown)

if __name__ == "__main__":
    main()
