"""Compare a variant's raw outputs with the PyTorch reference's, and judge them by tolerance."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgevision.ops.nms import box_iou
from edgevision.recipe import Tolerance



def compare(task: str, reference: list[dict[str, np.ndarray]], candidate: list[dict[str, np.ndarray]],
            match_iou: float = 0.99) -> dict[str, Any]:
    """Metrics over batches of outputs (same feeds): logits diff and cosine, label agreement;
    for detection, order-free matching of detections."""
    if task == "detection":
        return compare_detections(reference, candidate, match_iou)
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


def _per_image(batches: list[dict[str, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    out = []
    for b in batches:
        for i in range(len(b["num_dets"])):
            n = int(np.asarray(b["num_dets"][i]).reshape(-1)[0])
            out.append((b["boxes"][i][:n].astype(np.float64), b["scores"][i][:n].astype(np.float64), b["labels"][i][:n]))
    return out


def compare_detections(reference: list[dict[str, np.ndarray]], candidate: list[dict[str, np.ndarray]],
                       match_iou: float = 0.99) -> dict[str, Any]:
    """Greedy order-free matching (same label, IoU > match_iou), best reference scores first."""
    matched = n_ref = n_cand = 0
    score_diff = box_diff = 0.0
    ref_images = _per_image(reference)
    for (rb, rs, rl), (cb, cs, cl) in zip(ref_images, _per_image(candidate)):
        n_ref, n_cand = n_ref + len(rb), n_cand + len(cb)
        if not len(rb) or not len(cb):
            continue
        # IoU, or the corners themselves for boxes clipped flat at the border (their IoU is 0)
        close = (box_iou(rb, cb) > match_iou) | (np.abs(rb[:, None] - cb[None]).max(axis=2) < 1e-2)
        iou = box_iou(rb, cb)
        used = np.zeros(len(cb), dtype=bool)
        for i in np.argsort(-rs, kind="stable"):
            ok = (~used) & (cl == rl[i]) & close[i]
            if ok.any():
                j = int(np.argmax(np.where(ok, iou[i], -1)))
                used[j] = True
                matched += 1
                score_diff = max(score_diff, float(abs(rs[i] - cs[j])))
                box_diff = max(box_diff, float(np.abs(rb[i] - cb[j]).max()))
    return {
        "images": len(ref_images), "detections": n_ref, "candidate_detections": n_cand,
        "matched": matched / n_ref if n_ref else 1.0, "matched_candidate": matched / n_cand if n_cand else 1.0,
        "max_score_diff": score_diff, "max_box_diff": box_diff,
    }


def judge(metrics: dict[str, Any], tol: Tolerance) -> list[str]:
    """Reasons the metrics fail the tolerance (empty: passed)."""
    if "error" in metrics:
        return [metrics["error"]]
    if "matched" in metrics:  # detection
        reasons = []
        agreement = min(metrics["matched"], metrics["matched_candidate"])
        if agreement < tol.min_agreement:
            reasons.append(f"matched detections {agreement:.4f} < {tol.min_agreement}")
        if tol.max_abs_diff is not None and metrics["max_score_diff"] > tol.max_abs_diff:
            reasons.append(f"score diff {metrics['max_score_diff']:.3g} > {tol.max_abs_diff}")
        return reasons
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
