"""Network outputs -> result types, in OpenCV and numpy (one function per task, for every backend)."""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from edgevision.runtime.preprocess import Transform, opencv, resize, resize_nearest
from edgevision.runtime.results import Classification, Detections, Segmentation


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def classification(outputs: Dict[str, np.ndarray], index: int, labels: List[str], top_k: int) -> Classification:
    logits = outputs["logits"][index].astype(np.float32)
    probs = softmax(logits)
    k = min(top_k, probs.shape[0])
    ids = np.argsort(-probs, kind="stable")[:k]
    names = [labels[i] if i < len(labels) else str(i) for i in ids]
    return Classification(class_ids=ids.astype(np.int64), scores=probs[ids], names=names)


def segmentation(
    outputs: Dict[str, np.ndarray],
    index: int,
    t: Transform,
    net_size: Tuple[int, int],
    labels: List[str],
    scores: bool = False,
) -> Segmentation:
    """Crop the letterbox padding, bring logits back to the original size, then argmax.

    Outputs smaller than the network input (stride-s logits) are mapped proportionally.
    """
    net_h, net_w = net_size
    x0, y0, x1, y1 = t.content
    key = "logits" if "logits" in outputs else "labels"
    out = outputs[key][index]
    fy, fx = out.shape[-2] / net_h, out.shape[-1] / net_w
    crop = (..., slice(round(y0 * fy), round(y1 * fy)), slice(round(x0 * fx), round(x1 * fx)))
    if key == "labels":
        return Segmentation(label_map=resize_nearest(out[crop], t.height, t.width).astype(np.int32), labels=labels)
    logits = out[crop].astype(np.float32)
    if scores:  # per-class probabilities at the image size were asked for: the full [C,H,W] array
        up = resize(np.ascontiguousarray(logits.transpose(1, 2, 0)), t.height, t.width).reshape(t.height, t.width, -1)
        probs = softmax(up, axis=2).transpose(2, 0, 1)
        return Segmentation(label_map=up.argmax(axis=2).astype(np.int32), labels=labels, scores=probs)
    return Segmentation(label_map=upsampled_argmax(logits, t.height, t.width), labels=labels)


def upsampled_argmax(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """argmax over classes of logits [C,h,w] resized bilinearly to height x width (half-pixel
    centres), one class at a time in OpenCV with a running maximum: never a [C,H,W] float array
    (21 classes at 720p would be 77 MB), the same label map. Labels are kept in uint8 (uint16 past
    256 classes) and updated with saturating min/max instead of a boolean-mask write: 0.16 against
    0.36 ms for 4 classes at 320x320."""
    cv2 = opencv()
    planes = np.ascontiguousarray(logits, dtype=np.float32)
    best = cv2.resize(planes[0], (width, height), interpolation=cv2.INTER_LINEAR)
    value = np.empty_like(best)  # reused: peak memory is 2.5x the int32 label map, whatever the class count
    ahead = np.empty(best.shape, dtype=np.uint8)
    label = np.zeros((height, width), dtype=np.uint8 if planes.shape[0] <= 256 else np.uint16)
    step = ahead
    for c in range(1, planes.shape[0]):
        cv2.resize(planes[c], (width, height), dst=value, interpolation=cv2.INTER_LINEAR)
        cv2.compare(value, best, cv2.CMP_GT, dst=ahead)  # 255 where c beats every class before it (ties keep the lower id)
        step = ahead if label.dtype == np.uint8 else np.multiply(ahead, 257, dtype=np.uint16)  # 255 -> all ones
        cv2.min(step, c, dst=step)  # c there, 0 elsewhere
        cv2.max(label, step, dst=label)  # c is above every label so far: sets exactly those pixels
        cv2.max(best, value, dst=best)
    del best, value, ahead, step
    return label.astype(np.int32)


def detection(outputs: Dict[str, np.ndarray], index: int, t: Transform, labels: List[str],
              net_size: Tuple[int, int]) -> Detections:
    """The NMS contract (num_dets, boxes, scores, labels; masks / keypoint_heatmaps of R-CNNs;
    mask_coefficients + protos / keypoints of YOLO; rboxes of YOLO-OBB) -> Detections in original pixels."""
    from edgevision.runtime.instances import ProtoMasks, decode_keypoints

    n = int(np.asarray(outputs["num_dets"][index]).reshape(-1)[0])
    net_boxes = outputs["boxes"][index][:n]
    extra: Dict[str, object] = {}
    if "masks" in outputs:
        extra.update(mask_probs=outputs["masks"][index][:n], image_size=(t.height, t.width))
    if "protos" in outputs:
        extra.update(mask_source=ProtoMasks(outputs["mask_coefficients"][index][:n], outputs["protos"][index],
                                            net_boxes, net_size, t), image_size=(t.height, t.width))
    points = None
    if "keypoint_heatmaps" in outputs:
        points, scores = decode_keypoints(outputs["keypoint_heatmaps"][index][:n], net_boxes)
    elif "keypoints" in outputs:  # YOLO-pose: (x, y[, visibility]) in network pixels
        raw = outputs["keypoints"][index][:n].astype(np.float32)
        points = np.concatenate([raw[..., :2], np.ones_like(raw[..., :1])], axis=-1)
        scores = raw[..., 2] if raw.shape[-1] == 3 else np.ones(raw.shape[:2], np.float32)
    if points is not None:
        points[..., 0] = (points[..., 0] - t.pad_x) / t.scale_x
        points[..., 1] = (points[..., 1] - t.pad_y) / t.scale_y
        extra.update(keypoints=points, keypoint_scores=scores)
    if "rboxes" in outputs:  # OBB: cx, cy, w, h, angle; letterboxed: x and y scale alike, up to the content's rounding
        rotated = outputs["rboxes"][index][:n].astype(np.float32).copy()
        rotated[:, 0] = (rotated[:, 0] - t.pad_x) / t.scale_x
        rotated[:, 1] = (rotated[:, 1] - t.pad_y) / t.scale_y
        rotated[:, 2] /= t.scale_x
        rotated[:, 3] /= t.scale_y
        extra.update(rotated=rotated)
    if n == 0 and not extra:
        return Detections.empty(labels)
    return Detections(t.to_original(net_boxes), outputs["scores"][index][:n], outputs["labels"][index][:n], labels, **extra)
