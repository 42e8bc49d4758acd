"""Per-detection outputs of R-CNNs, finished on the host in OpenCV and numpy (no PyTorch):

- paste_masks: Mask R-CNN's 28x28 mask probabilities pasted into the image, as torchvision's
  paste_masks_in_image (1-pixel zero border, box grown by (M+2)/M, bilinear resize to the
  integer box, threshold). torchvision's own ONNX version is a Loop that OpenVINO cannot run.
- mask_rle: COCO run-length encoding of boolean masks (uncompressed counts, column-major).
- ProtoMasks: YOLO-seg (Ultralytics) masks from prototypes: at the network input as Ultralytics'
  process_mask (mask coefficients x protos, bilinear upsampling, > 0, cropped to the box), and at the
  original image size as its process_mask_native (the logits of the letterbox content resized to the
  image, > 0, cropped to the box in original pixels).
- decode_keypoints: Keypoint R-CNN heatmaps -> (x, y, 1) and scores, as torchvision's
  heatmaps_to_keypoints (bicubic resize of each heatmap to its box, argmax).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Tuple

import numpy as np

from edgevision.runtime.preprocess import Transform, opencv


def paste_masks(probs: np.ndarray, boxes: np.ndarray, height: int, width: int, threshold: float = 0.5) -> np.ndarray:
    """probs [N,M,M] in [0,1], boxes [N,4] xyxy in the target image's pixels -> bool [N,height,width]."""
    n, m = probs.shape[0], probs.shape[-1]
    out = np.zeros((n, height, width), dtype=bool)
    if n == 0:
        return out
    cv2 = opencv()
    padded = np.pad(probs.astype(np.float32), ((0, 0), (1, 1), (1, 1)))
    scale = (m + 2.0) / m
    b = boxes.astype(np.float32)
    half = (b[:, 2:] - b[:, :2]) * 0.5 * scale
    centre = (b[:, 2:] + b[:, :2]) * 0.5
    grown = np.concatenate([centre - half, centre + half], axis=1).astype(np.int64)  # truncation, as torch's .to(int64)
    for i, (x0, y0, x1, y1) in enumerate(grown.tolist()):
        w, h = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
        xa, xb, ya, yb = max(x0, 0), min(x1 + 1, width), max(y0, 0), min(y1 + 1, height)
        if xb <= xa or yb <= ya:
            continue
        resized = cv2.resize(padded[i], (w, h), interpolation=cv2.INTER_LINEAR)  # torch's bilinear, half-pixel
        out[i, ya:yb, xa:xb] = resized[ya - y0:yb - y0, xa - x0:xb - x0] > threshold
    return out


@dataclass(frozen=True)
class ProtoMasks:
    """The masks of N detections, made when asked for: coefficients [N,M], protos [M,h,w] (one
    image's), boxes [N,4] in network-input pixels, the network size and the image's Transform."""

    coefficients: np.ndarray
    protos: np.ndarray
    boxes: np.ndarray
    net_size: Tuple[int, int]
    transform: Transform

    def __len__(self) -> int:
        return len(self.coefficients)

    def __getitem__(self, index: Any) -> "ProtoMasks":
        return ProtoMasks(self.coefficients[index], self.protos, self.boxes[index], self.net_size, self.transform)

    def network(self) -> np.ndarray:
        """bool [N,H,W] at the network input (Ultralytics' process_mask with upsample=True)."""
        cv2 = opencv()
        m, h, w = self.protos.shape
        logits = (self.coefficients.astype(np.float32) @ self.protos.reshape(m, -1)).reshape(-1, h, w)
        net_h, net_w = self.net_size
        out = np.zeros((len(logits), net_h, net_w), dtype=bool)
        cols, rows = np.arange(net_w, dtype=np.float32), np.arange(net_h, dtype=np.float32)
        for i, (x0, y0, x1, y1) in enumerate(self.boxes.astype(np.float32)):
            up = cv2.resize(logits[i], (net_w, net_h), interpolation=cv2.INTER_LINEAR)  # torch bilinear, half-pixel
            inside = ((rows >= y0) & (rows < y1))[:, None] & ((cols >= x0) & (cols < x1))[None, :]
            out[i] = (up > 0) & inside
        return out

    def render(self) -> np.ndarray:
        """bool [N,H,W] at the original image size, as Ultralytics' process_mask_native (its retina_masks
        path): the mask logits of the letterbox content, resized (bilinear) from the prototypes straight to
        the image, > 0, cropped to the boxes in original pixels. Prototypes are upsampled first by the
        smallest f in (1, 2, 4) that puts the content's edges on whole pixels, as Ultralytics does."""
        cv2 = opencv()
        t = self.transform
        m, ph, pw = self.protos.shape
        logits = (self.coefficients.astype(np.float32) @ self.protos.reshape(m, -1).astype(np.float32)).reshape(-1, ph, pw)
        net_h, net_w = self.net_size
        x0, y0, x1, y1 = t.content
        for f in (1, 2, 4):
            edges = np.array([x0 * pw * f / net_w, x1 * pw * f / net_w, y0 * ph * f / net_h, y1 * ph * f / net_h])
            if np.allclose(edges, np.round(edges), atol=1e-6):
                break
        left, right, top, bottom = (int(round(v)) for v in edges)
        boxes = t.to_original(self.boxes.astype(np.float32))
        cols, rows = np.arange(t.width, dtype=np.float32), np.arange(t.height, dtype=np.float32)
        out = np.zeros((len(logits), t.height, t.width), dtype=bool)
        for i, logit in enumerate(logits):
            up = cv2.resize(logit, (pw * f, ph * f), interpolation=cv2.INTER_LINEAR) if f > 1 else logit
            full = cv2.resize(np.ascontiguousarray(up[top:bottom, left:right]), (t.width, t.height),
                              interpolation=cv2.INTER_LINEAR)  # torch's bilinear (half-pixel), as F.interpolate
            bx0, by0, bx1, by1 = boxes[i]
            inside = ((rows >= by0) & (rows < by1))[:, None] & ((cols >= bx0) & (cols < bx1))[None, :]
            out[i] = (full > 0) & inside
        return out


def mask_rle(mask: np.ndarray) -> Dict[str, object]:
    """COCO uncompressed RLE of one HxW boolean mask: {"size": [H, W], "counts": [...]}, runs in
    column-major order starting with a run of zeros."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(edges).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def decode_keypoints(heatmaps: np.ndarray, boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """heatmaps [N,K,S,S], boxes [N,4] (the heatmaps' RoIs) -> keypoints [N,K,3] (x, y, 1) in the
    boxes' pixels and scores [N,K] (the resized heatmap at the argmax)."""
    cv2 = opencv()
    n, k = heatmaps.shape[:2]
    points = np.zeros((n, k, 3), np.float32)
    scores = np.zeros((n, k), np.float32)
    for i in range(n):
        x0, y0, x1, y1 = (float(v) for v in boxes[i])
        w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
        wc, hc = int(math.ceil(w)), int(math.ceil(h))
        # torch's bicubic (A = -0.75, edges replicated) is OpenCV's INTER_CUBIC; channels last for OpenCV
        maps = np.ascontiguousarray(heatmaps[i].astype(np.float32).transpose(1, 2, 0))
        roi_map = cv2.resize(maps, (wc, hc), interpolation=cv2.INTER_CUBIC).reshape(hc, wc, k).transpose(2, 0, 1)
        pos = roi_map.reshape(k, -1).argmax(axis=1)
        yi, xi = pos // wc, pos % wc
        points[i, :, 0] = (xi + 0.5) * (w / wc) + x0
        points[i, :, 1] = (yi + 0.5) * (h / hc) + y0
        points[i, :, 2] = 1.0
        scores[i] = roi_map[np.arange(k), yi, xi]
    return points, scores

