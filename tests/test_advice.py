"""What-to-ship advice from measured numbers (bench/advice.py)."""

from __future__ import annotations

from edgevision.bench.advice import INT8_MIN_GAIN, Candidate, advise


def _c(name: str, ms: float, passed: bool = True, acc: float | None = None, fps: float | None = None) -> Candidate:
    backend, precision = name.split("-")
    return Candidate(name, backend, precision, passed, ms, fps, acc)


def test_latency_and_throughput_picks_with_margins() -> None:
    a = advise([_c("onnxruntime-fp32", 10.0), _c("openvino-bf16", 4.0), _c("openvino-int8", 3.0, passed=False),
                _c("openvino-fp32", 8.0, fps=400.0)])
    assert a.latency == {"variant": "openvino-bf16", "e2e_ms": 4.0, "next": "openvino-fp32", "margin": 2.0}
    assert a.throughput["variant"] == "openvino-fp32" and a.throughput["margin"] == 1.6  # async 400/s beats 1000/4
    assert "openvino-int8" not in str(a.latency) and "ship for latency: openvino-bf16" in a.lines()[0]


def test_int8_that_does_not_pay_is_marked() -> None:
    a = advise([_c("onnxruntime-fp32", 18.6), _c("onnxruntime-int8", 25.1), _c("openvino-fp32", 9.5),
                _c("openvino-int8", 9.5 / (INT8_MIN_GAIN - 0.1)), _c("tensorrt-int8", 1.0)])
    assert a.notes["onnxruntime-int8"][0].startswith("slower than FP32: do not ship (25.10 ms vs onnxruntime-fp32 18.60 ms)")
    assert "only 1.20x faster than openvino-fp32" in a.notes["openvino-int8"][0]
    assert "tensorrt-int8" not in a.notes  # no FP32 of its backend to compare with


def test_latency_pick_is_never_a_flagged_int8() -> None:
    """INT8 1.01x faster than its FP32 is flagged "not worth it": the pick is the FP32 it barely beat."""
    a = advise([_c("onnxruntime-fp32", 2.24), _c("onnxruntime-int8", 2.22), _c("openvino-bf16", 2.40)])
    assert "not worth" in a.notes["onnxruntime-int8"][0]
    assert a.latency == {"variant": "onnxruntime-fp32", "e2e_ms": 2.24, "next": "openvino-bf16", "margin": 1.071}
    only_int8 = advise([_c("onnxruntime-fp32", 2.24, passed=False), _c("onnxruntime-int8", 2.22)])
    assert only_int8.latency["variant"] == "onnxruntime-int8"  # nothing to compare it with: not flagged


def test_dominated_variants_are_flagged_and_noise_is_not() -> None:
    a = advise([_c("onnxruntime-fp32", 10.0, acc=0.70), _c("openvino-fp32", 12.0, acc=0.70),
                _c("openvino-bf16", 10.3, acc=0.69), _c("openvino-int8", 5.0, acc=0.60)])
    assert a.notes["openvino-fp32"] == ["dominated by onnxruntime-fp32 (faster and at least as accurate)"]
    assert "openvino-bf16" not in a.notes  # 3% slower than a more accurate one: within noise
    assert "onnxruntime-fp32" not in a.notes  # the int8 is faster but less accurate


def test_nothing_passed_says_so() -> None:
    assert advise([_c("onnxruntime-fp32", 10.0, passed=False)]).lines() == [
        "nothing to ship: no variant passed verification with a measured latency"]
