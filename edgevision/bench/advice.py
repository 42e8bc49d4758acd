"""Which variant to ship, from measured numbers: the compile summary and `edgevision benchmark`
both end with this advice, so a user does not have to read a table to decide.

- latency: the passed variant with the lowest end-to-end p50 at batch 1, and its margin over the
  next one (an INT8 variant flagged below is never the pick);
- throughput: the passed variant with the most images per second (the best of its sync and async
  runs where measured, else 1000 / p50);
- per variant: INT8 that is not at least INT8_MIN_GAIN times faster than FP32 on the same backend
  ("slower than FP32: do not ship" when it is slower), and variants dominated by one that is
  faster and at least as accurate.

Pure functions of plain numbers: no backend, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from edgevision.records import Manifest

INT8_MIN_GAIN = 1.3  # below this, INT8's accuracy risk buys too little time


@dataclass(frozen=True)
class Candidate:
    name: str
    backend: str
    precision: str
    passed: bool
    e2e_ms: Optional[float]  # end-to-end p50, batch 1
    fps: Optional[float] = None  # best measured throughput (images / s)
    accuracy: Optional[float] = None  # the task metric, higher is better


@dataclass
class Advice:
    latency: Optional[Dict[str, Any]] = None  # {"variant", "e2e_ms", "next", "margin"}
    throughput: Optional[Dict[str, Any]] = None  # {"variant", "fps", "next", "margin"}
    notes: Dict[str, List[str]] = field(default_factory=dict)  # variant -> warnings

    def to_dict(self) -> Dict[str, Any]:
        return {"latency": self.latency, "throughput": self.throughput, "notes": self.notes}

    def lines(self) -> List[str]:
        """The advice as sentences for a console or a report."""
        out = []
        if self.latency:
            best = self.latency
            tail = f", {best['margin']:.2f}x faster than {best['next']}" if best["next"] else ""
            out.append(f"ship for latency: {best['variant']} ({best['e2e_ms']:.2f} ms end to end{tail})")
        if self.throughput:
            best = self.throughput
            tail = f", {best['margin']:.2f}x {best['next']}" if best["next"] else ""
            out.append(f"ship for throughput: {best['variant']} ({best['fps']:.1f} images/s{tail})")
        if not (self.latency or self.throughput):
            out.append("nothing to ship: no variant passed verification with a measured latency")
        out += [f"{name}: {note}" for name, notes in self.notes.items() for note in notes]
        return out


def advise(candidates: List[Candidate]) -> Advice:
    advice = Advice()
    timed = [c for c in candidates if c.passed and c.e2e_ms]
    # the latency pick never names an INT8 variant this advice tells the user not to ship
    shippable = [c for c in timed if not _int8_notes(c, timed)] or timed
    if timed:
        ranked = sorted(shippable, key=lambda c: c.e2e_ms)  # type: ignore[arg-type, return-value]
        best, nxt = ranked[0], ranked[1] if len(ranked) > 1 else None
        advice.latency = {"variant": best.name, "e2e_ms": best.e2e_ms, "next": nxt.name if nxt else None,
                          "margin": round(nxt.e2e_ms / best.e2e_ms, 3) if nxt else None}  # type: ignore[operator]
        rate = {c.name: c.fps or 1000.0 / c.e2e_ms for c in timed}  # type: ignore[operator]
        ranked = sorted(timed, key=lambda c: -rate[c.name])
        best, nxt = ranked[0], ranked[1] if len(ranked) > 1 else None
        advice.throughput = {"variant": best.name, "fps": round(rate[best.name], 2), "next": nxt.name if nxt else None,
                             "margin": round(rate[best.name] / rate[nxt.name], 3) if nxt else None}
    for c in timed:
        notes = _int8_notes(c, timed) + _dominated(c, timed)
        if notes:
            advice.notes[c.name] = notes
    return advice


def _int8_notes(c: Candidate, timed: List[Candidate]) -> List[str]:
    if c.precision != "int8":
        return []
    fp32 = next((o for o in timed if o.backend == c.backend and o.precision == "fp32"), None)
    if fp32 is None:
        return []
    gain = fp32.e2e_ms / c.e2e_ms  # type: ignore[operator]
    if gain < 1.0:
        return [f"slower than FP32: do not ship ({c.e2e_ms:.2f} ms vs {fp32.name} {fp32.e2e_ms:.2f} ms)"]
    if gain < INT8_MIN_GAIN:
        return [f"only {gain:.2f}x faster than {fp32.name} (< {INT8_MIN_GAIN}x): not worth INT8's accuracy risk"]
    return []


def _dominated(c: Candidate, timed: List[Candidate]) -> List[str]:
    """A variant beaten on speed by one at least as accurate (both measured) is not worth shipping."""
    for o in sorted(timed, key=lambda x: x.e2e_ms):  # type: ignore[arg-type, return-value]
        if o is c or o.e2e_ms >= c.e2e_ms * 0.95:  # type: ignore[operator]  # within 5%: noise, not a verdict
            continue
        if c.accuracy is not None and o.accuracy is not None and o.accuracy >= c.accuracy:
            return [f"dominated by {o.name} (faster and at least as accurate)"]
    return []


def from_manifest(manifest: Manifest, metric: str) -> Advice:
    """The compile summary's advice, from its quick interleaved timing."""
    return advise([Candidate(v.name, v.backend, v.precision, v.status == "passed" and v.verified_with is None,
                             ((v.latency or {}).get("e2e") or {}).get("p50"), None, (v.accuracy or {}).get(metric))
                   for v in manifest.variants])


def from_report(report: Dict[str, Any], e2e_ms: Optional[Dict[str, float]] = None) -> Advice:
    """The benchmark's advice: careful latency, the best measured throughput. `e2e_ms` (variant ->
    ms) replaces the report's own end-to-end p50s, e.g. medians over repeated benchmarks."""
    metric = report["artifact"]["metric"]
    out = []
    for r in report["variants"]:
        if r["baseline"]:
            continue
        lat = (r.get("latency") or {}).get("e2e") or {}
        fps = max((t["fps"] for t in r.get("throughput") or []), default=None)
        timed = not any("not timed" in n for n in r.get("notes") or [])
        p50 = lat.get("p50") if e2e_ms is None else e2e_ms.get(r["name"])
        out.append(Candidate(r["name"], r["backend"], r["precision"], r["status"] == "passed" and timed, p50,
                             fps, (r.get("accuracy") or {}).get(metric)))
    return advise(out)
