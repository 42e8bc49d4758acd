"""Compare a variant's raw outputs with the PyTorch reference's, and judge them by tolerance."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgevision.recipe import Tolerance


def compare(task: str, reference: list[dict[str, np.ndarray]], candidate: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Metrics over batches of outputs (same feeds): logits diff and cosine, label agreement."""
    ref = np.concatenate([r["logits"] for r in reference]).astype(np.float64)
    out = np.concatenate([c["logits"] for c in candidate]).astype(np.float64)
    if ref.shape != out.shape:
        return {"error": f"logits shape {list(out.shape)} differs from PyTorch's {list(ref.shape)}"}
    a, b = ref.reshape(len(ref), -1), out.reshape(len(out), -1)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    agreement = float((ref.argmax(1) == out.argmax(1)).mean())
    metrics: dict[str, Any] = {
        "images": int(len(ref)),
        "max_abs_diff": float(np.abs(ref - out).max()),
        "min_cosine": float(cos.min()),
        ("top1_agreement" if task == "classification" else "pixel_agreement"): agreement,
    }
    if "labels" in reference[0] and "labels" in candidate[0]:  # in-graph argmax
        ref_l = np.concatenate([r["labels"] for r in reference])
        out_l = np.concatenate([c["labels"] for c in candidate])
        metrics["labels_agreement"] = float((ref_l == out_l).mean())
    return metrics


def judge(metrics: dict[str, Any], tol: Tolerance) -> list[str]:
    """Reasons the metrics fail the tolerance (empty: passed)."""
    if "error" in metrics:
        return [metrics["error"]]
    reasons = []
    if metrics["min_cosine"] < tol.min_cosine:
        reasons.append(f"cosine {metrics['min_cosine']:.6f} < {tol.min_cosine}")
    if tol.max_abs_diff is not None and metrics["max_abs_diff"] > tol.max_abs_diff:
        reasons.append(f"max abs diff {metrics['max_abs_diff']:.3g} > {tol.max_abs_diff}")
    agreement = metrics.get("top1_agreement", metrics.get("pixel_agreement"))
    if agreement < tol.min_agreement:
        reasons.append(f"agreement {agreement:.4f} < {tol.min_agreement}")
    if metrics.get("labels_agreement", 1.0) < tol.min_agreement:
        reasons.append(f"in-graph labels agreement {metrics['labels_agreement']:.4f} < {tol.min_agreement}")
    return reasons
