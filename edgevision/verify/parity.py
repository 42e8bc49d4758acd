"""Compare a variant's raw outputs with the PyTorch reference's, and judge them by tolerance."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgevision.ops.nms import box_iou
from edgevision.recipe_sections import Tolerance


def compare(task: str, reference: list[dict[str, np.ndarray]], candidate: list[dict[str, np.ndarray]],
            tol: Tolerance) -> dict[str, Any]:
    """Metrics over batches of outputs (same feeds): logits diff and cosine, label agreement;
    for detection, order-free matching of detections (and their masks / keypoints)."""
    if "num_dets" in reference[0]:
        return compare_detections(reference, candidate, tol.match_iou, tol.min_mask_iou, tol.max_keypoint_px)
    ref = np.concatenate([r["logits"] for r in reference]).astype(np.float64)
    out = np.concatenate([c["logits"] for c in candidate]).astype(np.float64)
    if ref.shape != out.shape:
        return {"error": f"logits shape {list(out.shape)} differs from PyTorch's {list(ref.shape)}"}
    a, b = ref.reshape(len(ref), -1), out.reshape(len(out), -1)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    agreement = float((ref.argmax(1) == out.argmax(1)).mean())
    metrics: dict[str, Any] = {
        "images": int(len(ref)),
        "logit_spread": float(a.std(axis=1).max()),  # 0: constant logits, nothing to compare
        "max_abs_diff": float(np.abs(ref - out).max()),
        "min_cosine": float(cos.min()),
        ("top1_agreement" if task == "classification" else "pixel_agreement"): agreement,
    }
    if "labels" in reference[0] and "labels" in candidate[0]:  # in-graph argmax
        ref_l = np.concatenate([r["labels"] for r in reference])
        out_l = np.concatenate([c["labels"] for c in candidate])
        metrics["labels_agreement"] = float((ref_l == out_l).mean())
    return metrics


def _per_image(batches: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    out = []
    for b in batches:
        for i in range(len(b["num_dets"])):
            n = int(np.asarray(b["num_dets"][i]).reshape(-1)[0])
            out.append({k: (v[i][:n].astype(np.float64) if k in ("boxes", "scores") else v[i] if k == "protos" else v[i][:n])
                        for k, v in b.items() if k != "num_dets"})
    return out


def _has_keypoints(image: dict[str, np.ndarray]) -> bool:
    return "keypoints" in image or "keypoint_heatmaps" in image


def _keypoints(image: dict[str, np.ndarray], idx: list[int]) -> np.ndarray:
    """Keypoints [n,K,3] of detections idx: given (torchvision's), or decoded from heatmaps as the runtime does."""
    from edgevision.runtime.instances import decode_keypoints

    if "keypoints" in image:
        return image["keypoints"][idx]
    return decode_keypoints(image["keypoint_heatmaps"][idx], image["boxes"][idx])[0]


def _mask_iou(pa: np.ndarray, ba: np.ndarray, pb: np.ndarray, bb: np.ndarray) -> float:
    """IoU of two mask-probability maps pasted (as the runtime does) into the frame around both boxes."""
    from edgevision.runtime.instances import paste_masks

    origin = np.floor(np.minimum(ba[:2], bb[:2]))
    boxes = np.stack([ba, bb]) - np.tile(origin, 2)
    h, w = (int(np.ceil(max(ba[3], bb[3]) - origin[1])) + 2, int(np.ceil(max(ba[2], bb[2]) - origin[0])) + 2)
    a, b = paste_masks(np.stack([pa, pb]), boxes, h, w)
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def _proto_mask_ious(r: dict[str, np.ndarray], c: dict[str, np.ndarray], pairs: list[tuple[int, int]]) -> list[float]:
    """IoU of YOLO-seg masks made from prototypes as the runtime does, at network size (the
    protos are at stride 4: Ultralytics' Proto)."""
    from edgevision.runtime.instances import ProtoMasks
    from edgevision.runtime.preprocess import Transform

    size = (r["protos"].shape[-2] * 4, r["protos"].shape[-1] * 4)
    unused = Transform(1, 1, 0, 0, size[1], size[0], (0, 0, size[1], size[0]))  # network() needs no transform
    i, j = (list(x) for x in zip(*pairs)) if pairs else ([], [])
    ma = ProtoMasks(r["mask_coefficients"][i], r["protos"], r["boxes"][i], size, unused).network()
    mb = ProtoMasks(c["mask_coefficients"][j], c["protos"], c["boxes"][j], size, unused).network()
    union = (ma | mb).sum(axis=(1, 2))
    return np.where(union > 0, (ma & mb).sum(axis=(1, 2)) / np.maximum(union, 1), 1.0).tolist()


def compare_detections(reference: list[dict[str, np.ndarray]], candidate: list[dict[str, np.ndarray]],
                       match_iou: float = 0.99, mask_iou: float = 0.98, keypoint_px: float = 1.0) -> dict[str, Any]:
    """Greedy order-free matching (same label, IoU > match_iou), best reference scores first.
    With masks: the mask IoU of every matched pair, pasted at network size ("masks_close": the
    share of pairs at IoU >= mask_iou); with keypoint heatmaps: each pair's largest keypoint
    distance, decoded as the runtime does ("keypoints_close": the share within keypoint_px)."""
    matched = n_ref = n_cand = 0
    score_diff = box_diff = 0.0
    mask_ious: list[float] = []
    distances: list[float] = []
    ref_images = _per_image(reference)
    for r, c in zip(ref_images, _per_image(candidate)):
        rb, rs, rl, cb, cs, cl = r["boxes"], r["scores"], r["labels"], c["boxes"], c["scores"], c["labels"]
        n_ref, n_cand = n_ref + len(rb), n_cand + len(cb)
        if not len(rb) or not len(cb):
            continue
        # IoU, or the corners themselves for boxes clipped flat at the border (their IoU is 0)
        iou = box_iou(rb, cb)
        close = (iou > match_iou) | (np.abs(rb[:, None] - cb[None]).max(axis=2) < 1e-2)
        used = np.zeros(len(cb), dtype=bool)
        pairs = []
        for i in np.argsort(-rs, kind="stable"):
            ok = (~used) & (cl == rl[i]) & close[i]
            if ok.any():
                j = int(np.argmax(np.where(ok, iou[i], -1)))
                used[j] = True
                pairs.append((i, j))
                score_diff = max(score_diff, float(abs(rs[i] - cs[j])))
                box_diff = max(box_diff, float(np.abs(rb[i] - cb[j]).max()))
        matched += len(pairs)
        if "masks" in r and "masks" in c:
            mask_ious += [_mask_iou(r["masks"][i], rb[i], c["masks"][j], cb[j]) for i, j in pairs]
        if "protos" in r and "protos" in c:
            mask_ious += _proto_mask_ious(r, c, pairs)
        if _has_keypoints(r) and _has_keypoints(c) and pairs:
            i, j = (list(x) for x in zip(*pairs))
            kr, kc = _keypoints(r, i), _keypoints(c, j)
            distances += np.linalg.norm(kr[..., :2] - kc[..., :2], axis=-1).max(axis=1).tolist()
    out: dict[str, Any] = {
        "images": len(ref_images), "detections": n_ref, "candidate_detections": n_cand,
        "matched": matched / n_ref if n_ref else 1.0, "matched_candidate": matched / n_cand if n_cand else 1.0,
        "max_score_diff": score_diff, "max_box_diff": box_diff,
    }
    if mask_ious:
        ious = np.asarray(mask_ious)
        out.update(masks_close=float((ious >= mask_iou).mean()), min_mask_iou=float(ious.min()),
                   mean_mask_iou=float(ious.mean()), mask_iou_threshold=mask_iou)
    if distances:
        px = np.asarray(distances)
        out.update(keypoints_close=float((px <= keypoint_px).mean()), max_keypoint_px=float(px.max()),
                   keypoint_px_threshold=keypoint_px)
    return out


def judge(metrics: dict[str, Any], tol: Tolerance) -> list[str]:
    """Reasons the metrics fail the tolerance (empty: passed)."""
    if "error" in metrics:
        return [metrics["error"]]
    if "matched" in metrics:  # detection
        reasons = []
        if metrics["detections"] == 0 and metrics["candidate_detections"] == 0:
            reasons.append(f"compared nothing: neither PyTorch nor the variant detected anything on the {metrics['images']} "
                           "verification images (every score under export.nms.score_threshold); verify on images that "
                           "hold the model's objects (data.val), with a trained checkpoint, or lower the threshold")
        agreement = min(metrics["matched"], metrics["matched_candidate"])
        if agreement < tol.min_agreement:
            reasons.append(f"matched detections {agreement:.4f} < {tol.min_agreement}")
        if tol.max_abs_diff is not None and metrics["max_score_diff"] > tol.max_abs_diff:
            reasons.append(f"score diff {metrics['max_score_diff']:.3g} > {tol.max_abs_diff}")
        if metrics.get("masks_close", 1.0) < tol.min_agreement:
            reasons.append(f"masks at IoU >= {metrics['mask_iou_threshold']}: {metrics['masks_close']:.4f} of matched "
                           f"instances < {tol.min_agreement} (lowest mask IoU {metrics['min_mask_iou']:.3f})")
        if metrics.get("keypoints_close", 1.0) < tol.min_agreement:
            reasons.append(f"keypoints within {metrics['keypoint_px_threshold']} px: {metrics['keypoints_close']:.4f} of "
                           f"matched instances < {tol.min_agreement} (largest {metrics['max_keypoint_px']:.1f} px)")
        return reasons
    reasons = []
    if metrics.get("logit_spread", 1.0) < 1e-6:
        reasons.append(f"compared nothing: PyTorch's logits are the same for every class on all {metrics['images']} "
                       "verification images (a degenerate model or input); verify a trained checkpoint or other images")
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
