"""Peak resident memory of one model, measured in a process of its own.

    python -m edgevision.bench.memory ARTIFACT NAME IMAGE [--threads N] [--iterations N]

loads variant NAME of ARTIFACT (or, for NAME 'pytorch-fp32', the PyTorch model it was compiled
from), runs predict(IMAGE) a few times and prints one JSON line: the process's resident memory
before the model was loaded and its peak over the whole run, in MB. One process per model, so
the numbers do not include the other models a benchmark holds open.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional

BASELINE = "pytorch-fp32"


def _status_mb(field: str) -> Optional[float]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _peak_mb() -> float:
    """This process's peak RSS. Linux: VmHWM, which starts afresh at exec; getrusage's ru_maxrss
    would carry over the size of the (large) parent that forked this process."""
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)  # bytes on macOS, KiB elsewhere


def measure(artifact: Path, name: str, image: Path, threads: Optional[int], iterations: int) -> Dict[str, Any]:
    from edgevision.runtime import load

    start = _status_mb("VmRSS")
    if name == BASELINE:
        from edgevision.artifact import read_manifest
        from edgevision.verify.reference import reference_predictor

        predictor = reference_predictor(read_manifest(artifact), threads)
    else:
        predictor = load(artifact / name, threads=threads)
    with predictor:
        for _ in range(iterations):
            predictor.predict(str(image))
    return {"rss_start_mb": start, "peak_rss_mb": _peak_mb()}


def measure_in_subprocess(artifact: Path, name: str, image: Path, threads: Optional[int],
                          iterations: int = 10, timeout: float = 600) -> Dict[str, Any]:
    """Run `measure` in a fresh interpreter; raise RuntimeError with its last words if it fails."""
    cmd = [sys.executable, "-m", "edgevision.bench.memory", str(artifact), name, str(image), "--iterations", str(iterations)]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"memory probe for {name} exited {proc.returncode}: {tail}")
    return json.loads(lines[-1])


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgevision.bench.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("name")
    parser.add_argument("image", type=Path)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=10)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.artifact, args.name, args.image, args.threads, args.iterations)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
