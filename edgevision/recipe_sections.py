"""The recipe's sections about what a compile is checked, trained and benchmarked on: verify (parity
tolerances, the accuracy gate), data, calibration, train and benchmark. recipe.Recipe holds them."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from edgevision.benchmark_options import default, help_text
from edgevision.recipe_types import Count, Precision, SafePath, Seed, _Strict
from edgevision.tasks import default_tolerance

__all__ = ["BenchmarkSpec", "CalibrationSpec", "DataSource", "DataSpec", "MaxDrop", "Tolerance", "TrainSpec",
           "VerifySpec"]


class Tolerance(_Strict):
    """Parity limits for one precision, against the FP32 PyTorch model."""

    min_cosine: float = Field(ge=0, le=1)
    max_abs_diff: Optional[float] = Field(None, gt=0, description="On logits; null = not checked.")
    min_agreement: float = Field(ge=0, le=1, description="Top-1, pixel, or matched-detection agreement.")
    match_iou: float = Field(0.99, gt=0, lt=1, description="Detection: two detections match at IoU above this (same label).")
    min_mask_iou: float = Field(0.98, ge=0, le=1, description="Instance segmentation: matched instances whose pasted "
                                "masks overlap at least this much (IoU) must be min_agreement of them.")
    max_keypoint_px: float = Field(1.0, gt=0, description="Keypoints: matched instances' keypoints within this many "
                                   "pixels must be min_agreement of them.")


class MaxDrop(_Strict):
    """Accuracy gate: the most a variant may lose against the FP32 PyTorch model on data.val, in
    percentage points (0.5 = half a point of mAP). The task's metric is checked; null = not gated."""

    map: Optional[float] = Field(1.0, ge=0, le=100, description="Box mAP@[.5:.95] (detection, keypoints).")
    mask_map: Optional[float] = Field(1.0, ge=0, le=100, description="Mask mAP@[.5:.95] (instance_segmentation).")
    miou: Optional[float] = Field(1.0, ge=0, le=100, description="mIoU (segmentation).")
    top1: Optional[float] = Field(1.0, ge=0, le=100, description="Top-1 accuracy (classification).")


class VerifySpec(_Strict):
    max_drop: MaxDrop = Field(MaxDrop(), description="Accuracy gate per metric, in points, against PyTorch FP32 "
                              "on data.val; a variant over it fails the compile.")
    images: int = Field(8, ge=1, le=1000, description="Images compared against PyTorch per variant.")
    data: Optional["DataSource"] = Field(None, description="Where those images come from (default: data.val, else "
                                         "generated shapes images), e.g. {source: folder, path: frames/} for the "
                                         "kind of images the model will see.")
    tolerances: dict[Precision, Tolerance] = Field(default_factory=dict, description="Overrides per precision.")
    timing_rounds: int = Field(30, ge=0, le=10000, description="Interleaved latency rounds in the summary (0: skip).")

    def tolerance(self, precision: str, task: str = "classification") -> Tolerance:
        if precision in self.tolerances:
            return self.tolerances[precision]  # type: ignore[index]
        return Tolerance(**default_tolerance(task, precision))


class DataSource(_Strict):
    source: Literal["shapes", "coco", "folder"]
    path: Optional[SafePath] = Field(None, description="coco: annotation json; folder: image directory.")
    images: Optional[SafePath] = Field(None, description="coco: image directory (default: next to the json).")
    count: Optional[Count] = Field(None, description="Number of images (shapes: required; at most 1,000,000).")
    seed: Seed = 0
    max_objects: int = Field(4, ge=1, le=20, description="shapes: objects per image.")

    @model_validator(mode="after")
    def _complete(self) -> "DataSource":
        if self.source == "shapes" and self.count is None:
            raise ValueError("source 'shapes' needs 'count' (how many images to generate)")
        if self.source in ("coco", "folder") and self.path is None:
            raise ValueError(f"source '{self.source}' needs 'path'")
        return self


class DataSpec(_Strict):
    train: Optional[DataSource] = None
    val: Optional[DataSource] = None


class CalibrationSpec(DataSource):
    """Images for INT8 calibration, pre-processed exactly as the runtime does (calibration/README.md)."""

    source: Literal["shapes", "coco", "folder"] = "folder"
    count: int = Field(300, ge=1, le=100000, description="Images used (a seeded random sample when the source has more).")
    method: Literal["minmax", "entropy", "percentile"] = Field(
        "minmax", description="Activation ranges (ONNX Runtime / TensorRT Q/DQ); OpenVINO uses NNCF's own estimators.")
    accuracy_control: bool = Field(
        False, description="If an INT8 variant exceeds verify.max_drop, keep its most sensitive layers in float "
        "(NNCF accuracy control for OpenVINO, node exclusion for ONNX Runtime / TensorRT) and report them.")
    cache: bool = Field(True, description="Reuse calibration statistics cached under build/.cache/calibration, keyed "
                        "by the hash of (model, images, method).")


class TrainSpec(_Strict):
    epochs: int = Field(10, ge=1, le=100_000)
    batch: int = Field(8, ge=1, le=4096)
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(1e-4, ge=0, le=1)
    seed: Seed = 0


class BenchmarkSpec(_Strict):
    """Defaults of `edgevision benchmark` (command-line options override them); names, defaults and
    descriptions come from bench/options.py, the limits are here."""

    iterations: int = Field(default("iterations"), ge=1, le=100000, description=help_text("iterations"))
    duration: Optional[float] = Field(default("duration"), gt=0, le=3600, description=help_text("duration"))
    warmup: int = Field(default("warmup"), ge=0, le=10000, description=help_text("warmup"))
    batch_sizes: list[int] = Field(default("batch_sizes"), min_length=1, description=help_text("batch_sizes"))
    async_seconds: float = Field(default("async_seconds"), ge=0, le=3600, description=help_text("async_seconds"))
    accuracy: bool = Field(default("accuracy"), description=help_text("accuracy"))
    memory: bool = Field(default("memory"), description=help_text("memory"))
    accuracy_images: Optional[int] = Field(default("accuracy_images"), ge=1, le=1_000_000,
                                           description=help_text("accuracy_images"))

    @field_validator("batch_sizes")
    @classmethod
    def _batches(cls, v: list[int]) -> list[int]:
        if any(b < 1 or b > 64 for b in v):
            raise ValueError("batch sizes must be between 1 and 64")
        return sorted(set(v))
