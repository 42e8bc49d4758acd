"""Serving load: the quickstart detector (ONNX Runtime FP32) behind a real tritonserver (Python-backend pipeline
model: frames in, detections out), with dynamic batching off and on and 1 or 2 model instances, against the same
predictor in process; N concurrent clients on loopback (gRPC, raw 640x480 frames), each a closed loop.

    python benchmarks/triton.py [--clients 1,4,8] [--seconds 4] [--rounds 3]

The server runs in the environment `pip install 'edgevision[triton-server]'` makes (tests/triton_server.py
builds and caches it). Client and server share this machine's cores: on 2 cores this measures what Triton
adds per request more than how it scales. Contenders interleaved, `rounds` rounds; throughput and latency
are medians over rounds with the spread (max-min)/median; batch sizes are what Triton's statistics say it
formed during the bursts.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]

import edgevision  # noqa: E402
from edgevision.data import ShapesDataset  # noqa: E402
from edgevision.serve.server import TritonServer  # noqa: E402
from edgevision.serve.triton_repo import ServeOptions, export_repository  # noqa: E402
from record import record  # noqa: E402
from triton_server import environment  # noqa: E402

VARIANT = "onnxruntime-fp32"
MODEL = f"quickstart-{VARIANT}"
CONFIGS = {"triton, no batching, 1 instance": ServeOptions(queue_delay_us=None, engine="none", threads=2),
           "triton, batching (no wait), 1 instance": ServeOptions(queue_delay_us=0, engine="none", threads=2),
           "triton, batching (2 ms wait), 1 instance": ServeOptions(queue_delay_us=2000, engine="none", threads=2),
           "triton, batching (no wait), 2 instances": ServeOptions(queue_delay_us=0, instances=2, engine="none", threads=1)}


def burst(predict: Callable[[np.ndarray], Any], frame: np.ndarray, clients: int, seconds: float) -> Dict[str, Any]:
    """`clients` threads calling predict in a loop for `seconds`: requests per second and latencies."""
    latencies: List[List[float]] = [[] for _ in range(clients)]
    stop = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            predict(frame)
            latencies[i].append(time.perf_counter() - t0)

    predict(frame)  # warm
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    flat = np.array([x for per in latencies for x in per]) * 1000
    return {"rps": len(flat) / elapsed, "p50": float(np.percentile(flat, 50)), "p99": float(np.percentile(flat, 99))}


def batches(grpc_address: str) -> Dict[int, int]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(grpc_address)
    stats = client.get_inference_statistics(MODEL).model_stats[0]
    client.close()
    return {int(b.batch_size): int(b.compute_infer.count) for b in stats.batch_stats}


def measure(args: argparse.Namespace) -> List[Dict[str, Any]]:
    from published import artifact_for

    from edgevision.console import RichReporter

    artifact = artifact_for("quickstart", RichReporter())
    env = environment()
    frame = np.ascontiguousarray(ShapesDataset(count=1, size=(480, 640), seed=3, max_objects=4)[0].image)
    work = Path(tempfile.mkdtemp(prefix="triton-bench-"))
    servers: Dict[str, TritonServer] = {}
    try:
        for name, options in CONFIGS.items():
            repo = work / f"repo{len(servers)}"
            export_repository(artifact, repo, [VARIANT], options)
            servers[name] = TritonServer([repo], env.install, python=env.python).start()
        samples: Dict[Tuple[str, int], List[Dict[str, Any]]] = {}
        formed: Dict[Tuple[str, int], Dict[int, int]] = {}
        for rnd in range(args.rounds):
            for clients in args.clients:
                with edgevision.load(artifact, VARIANT, threads=2, streams=clients) as local:
                    samples.setdefault(("in process", clients), []).append(burst(local.predict, frame, clients, args.seconds))
                for name, server in servers.items():
                    address = server.grpc_url.split("//")[1]
                    before = batches(address)
                    with edgevision.load(f"{server.grpc_url}/{MODEL}", workers=1) as remote:
                        samples.setdefault((name, clients), []).append(burst(remote.predict, frame, clients, args.seconds))
                    after = batches(address)
                    total = formed.setdefault((name, clients), {})
                    for size, count in after.items():
                        total[size] = total.get(size, 0) + count - before.get(size, 0)
                print(f"round {rnd + 1}/{args.rounds}, {clients} clients done", flush=True)
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return [summarise(name, clients, runs, formed.get((name, clients))) for (name, clients), runs in samples.items()]


def summarise(name: str, clients: int, runs: List[Dict[str, Any]], formed: Any) -> Dict[str, Any]:
    out: Dict[str, Any] = {"contender": name, "clients": clients, "rounds": len(runs)}
    for key in ("rps", "p50", "p99"):
        values = [r[key] for r in runs]
        med = statistics.median(values)
        out[key] = round(med, 2)
        out[f"{key}_spread"] = round((max(values) - min(values)) / med, 3) if med else None
    if formed:
        executions = sum(formed.values())
        out["batches"] = {str(k): v for k, v in sorted(formed.items()) if v}
        out["mean_batch"] = round(sum(k * v for k, v in formed.items()) / executions, 2) if executions else None
    return out


def markdown(report: Dict[str, Any]) -> str:
    m = report["machine"]
    rows = report["models"]
    local = {r["clients"]: r for r in rows if r["contender"] == "in process"}
    lines = [f"# Triton serving load: quickstart detector, {VARIANT}, 640x480 frames over gRPC on loopback", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, ISA {' '.join(m['isa'])}. Client and server share the cores. "
             f"{report['rounds']} interleaved rounds of {report['seconds_per_burst']} s per contender and client count; "
             "medians, spread = (max-min)/median.", "",
             "| contender | clients | req/s | spread | p50 ms | p99 ms | overhead p50 ms | batches formed (size: count) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = local.get(r["clients"])
        overhead = "-" if r["contender"] == "in process" or base is None else f"{r['p50'] - base['p50']:.2f}"
        formed = ", ".join(f"{k}: {v}" for k, v in (r.get("batches") or {}).items()) or "-"
        lines.append(f"| {r['contender']} | {r['clients']} | {r['rps']:.1f} | {r['rps_spread']:.2f} | {r['p50']:.2f} | "
                     f"{r['p99']:.2f} | {overhead} | {formed} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,4,8")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    record("triton_load", 2, {"rounds": args.rounds, "seconds_per_burst": args.seconds, "variant": VARIANT},
           lambda: measure(args), markdown)


if __name__ == "__main__":
    main()
