"""Video throughput: `edgevision run`'s pipelined stream against the synchronous loop a user would
write (read, predict, draw, write), on a 640x480 clip, both writing the same annotated video; then a
simulated 60 fps live camera (MJPEG over HTTP on 127.0.0.1) to count dropped frames.

    python benchmarks/stream.py [--frames 150] [--repeats 3]

Artifacts: build/quickstart (recipes/quickstart.yaml) and SSDlite-320 from published.py's recipe,
compiled on first use; run from the repository root. Contenders run interleaved, `repeats` rounds; FPS and
capture-to-result latency are medians over rounds, with the spread (max-min)/median.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]

import cv2  # noqa: E402

import edgevision  # noqa: E402
from edgevision.runtime.annotate import annotate  # noqa: E402
from edgevision.runtime.video import run  # noqa: E402
from record import record  # noqa: E402
from videos import MjpegServer, jpeg_frames, shapes_frames, write_clip  # noqa: E402 - the tests' clip and camera

MODELS = {"quickstart": ["onnxruntime-fp32", "openvino-fp32", "openvino-int8"],
          "ssdlite320": ["onnxruntime-fp32", "openvino-fp32", "openvino-int8"]}
# Detections drawn: what an application would keep. SSDlite has random weights (BatchNorm re-estimated):
# its 300 boxes a frame all score 0.43-0.92, so 0.8 keeps about as many as a trained model shows.
MIN_SCORE = {"quickstart": 0.5, "ssdlite320": 0.8}


def artifact(name: str) -> Path:
    from edgevision.console import RichReporter
    from published import artifact_for

    return artifact_for(name, RichReporter())  # compiled on first use (quickstart: trained first)


def synchronous(model: Any, clip: Path, out: Path, min_score: float) -> Dict[str, Any]:
    """The loop without edgevision's stream: each stage waits for the previous one."""
    cap = cv2.VideoCapture(str(clip))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), cap.get(cv2.CAP_PROP_FPS),
                             (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))))
    latencies, start = [], time.perf_counter()
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        captured = time.perf_counter()
        result = model.predict(frame, channel_order="bgr").filter(min_score=min_score)
        latencies.append(time.perf_counter() - captured)
        writer.write(annotate(frame, result, text=f"{len(latencies)}"))
    seconds = time.perf_counter() - start
    cap.release()
    writer.release()
    return {"fps": len(latencies) / seconds, **_ms(latencies)}


def pipelined(model: Any, clip: Path, out: Path, in_flight: int, min_score: float) -> Dict[str, Any]:
    stats = run(model, [str(clip)], save=out, in_flight=in_flight, min_score=min_score)
    return {"fps": stats["fps"], "p50": stats["latency_ms"]["p50"], "p99": stats["latency_ms"]["p99"]}


def _ms(latencies: List[float]) -> Dict[str, float]:
    p50, p99 = np.percentile(np.asarray(latencies) * 1000, [50, 99])
    return {"p50": float(p50), "p99": float(p99)}


def summary(rounds: List[Dict[str, Any]]) -> Dict[str, Any]:
    fps = [r["fps"] for r in rounds]
    med = float(np.median(fps))
    return {"fps": round(med, 1), "fps_spread": round((max(fps) - min(fps)) / med, 3),
            "p50_ms": round(float(np.median([r["p50"] for r in rounds])), 1),
            "p99_ms": round(float(np.median([r["p99"] for r in rounds])), 1)}


def measure_files(frames: int, repeats: int, work: Path) -> List[Dict[str, Any]]:
    clip = write_clip(work / "clip.mp4", shapes_frames(frames, size=(480, 640)), fps=30)
    rows = []
    for name, variants in MODELS.items():
        root = artifact(name)
        for variant in variants:
            # as `edgevision run --in-flight N` loads them: the sync loop's model takes every thread per call
            models = {n: edgevision.load(root / variant, streams=n) for n in (1, 2)}
            for model in models.values():
                model.predict(shapes_frames(1, size=(480, 640))[0])  # compile / warm up
            runs: Dict[str, List[Dict[str, Any]]] = {"sync": [], "pipelined-1": [], "pipelined-2": []}
            for _ in range(repeats):  # interleaved
                runs["sync"].append(synchronous(models[1], clip, work / "sync.mp4", MIN_SCORE[name]))
                for n, model in models.items():
                    runs[f"pipelined-{n}"].append(pipelined(model, clip, work / f"p{n}.mp4", n, MIN_SCORE[name]))
            for model in models.values():
                model.close()
            row = {"model": name, "variant": variant, "min_score": MIN_SCORE[name], **{k: summary(v) for k, v in runs.items()}}
            row["speedup"] = round(row["pipelined-2"]["fps"] / row["sync"]["fps"], 2)
            rows.append(row)
            print(row, flush=True)
    return rows


def measure_live(seconds: float, work: Path) -> List[Dict[str, Any]]:
    """A live camera (MJPEG over HTTP on 127.0.0.1) at 60 fps, and at 120 fps, faster than the
    pipeline: SSDlite on each variant as `run` sets it up (2 in flight), drop oldest, video written."""
    rows = []
    root = artifact("ssdlite320")
    for rate in (60, 120):
        server = MjpegServer(fps=rate, frames=jpeg_frames(30, size=(480, 640))).start()
        try:
            for variant in MODELS["ssdlite320"]:
                with edgevision.load(root / variant, streams=2) as model:
                    stats = run(model, [server.url], save=work / "live.mp4", max_frames=int(rate * seconds),
                                min_score=MIN_SCORE["ssdlite320"])
                source = stats["sources"][0]
                rows.append({"model": "ssdlite320", "variant": variant, "source_fps": rate, "read": source["read"],
                             "inferred": source["inferred"], "dropped": source["dropped"], "fps": stats["fps"],
                             "latency_ms": stats["latency_ms"], "stages_ms": stats["stages_ms"]})
                print(rows[-1], flush=True)
        finally:
            server.stop()
    return rows


def markdown(report: Dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"# Video: pipelined stream vs synchronous loop ({report['frames']} frames, 640x480, annotated video written)",
             "", f"Machine: {m.get('cpu')} ({' '.join(m.get('isa') or [])}), {m.get('cores')} cores; load {report['load_before']} -> {report['load_after']}; "
             f"{report['repeats']} interleaved rounds, medians, spread = (max-min)/median of FPS.", "",
             "| model | variant | sync FPS | pipelined FPS (in_flight 1) | pipelined FPS (in_flight 2) | speedup | "
             "sync latency p50/p99 ms | pipelined (2) latency p50/p99 ms |", "|---|---|---|---|---|---|---|---|"]
    for r in report["models"]["files"]:
        s, p1, p2 = r["sync"], r["pipelined-1"], r["pipelined-2"]
        lines.append(f"| {r['model']} | {r['variant']} | {s['fps']} (±{s['fps_spread']:.0%}) | {p1['fps']} "
                     f"(±{p1['fps_spread']:.0%}) | {p2['fps']} (±{p2['fps_spread']:.0%}) | {r['speedup']}x | "
                     f"{s['p50_ms']} / {s['p99_ms']} | {p2['p50_ms']} / {p2['p99_ms']} |")
    lines += ["", "Simulated live camera (MJPEG over HTTP, 127.0.0.1, 640x480), drop oldest, buffer 4, in_flight 2:", "",
              "| model | variant | camera fps | read | inferred | dropped | FPS | capture to result p50/p99 ms |",
              "|---|---|---|---|---|---|---|---|"]
    for r in report["models"]["live"]:
        lines.append(f"| {r['model']} | {r['variant']} | {r['source_fps']} | {r['read']} | {r['inferred']} | {r['dropped']} | "
                     f"{r['fps']} | {r['latency_ms']['p50']} / {r['latency_ms']['p99']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--live-seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        record("stream", os.cpu_count() or 1, {"frames": args.frames, "repeats": args.repeats},
               lambda: {"files": measure_files(args.frames, args.repeats, work),  # type: ignore[dict-item]
                        "live": measure_live(args.live_seconds, work)}, markdown)


if __name__ == "__main__":
    main()
