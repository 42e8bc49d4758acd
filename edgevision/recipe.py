"""The recipe: one YAML file that describes a whole compile (typed, validated, no inheritance).

Relative paths in a recipe are resolved against the current working directory, as for any
command-line tool. Every validation error names the file and the field path, for example
``recipe.yaml: targets[1].precision: 'int4' is not one of fp32, fp16, bf16, int8``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator

from edgevision.backends.base import BACKENDS, unknown_options
from edgevision.errors import RecipeError
from edgevision.records import InputSpec
from edgevision.recipe_errors import format_errors
from edgevision.recipe_sections import BenchmarkSpec, CalibrationSpec, DataSpec, TrainSpec, VerifySpec
from edgevision.recipe_types import Precision, SafePath, Text, _Strict, _tuple
from edgevision.recipe_yaml import parse_yaml, read_recipe_text

Task = Literal["classification", "segmentation", "detection", "instance_segmentation", "keypoints", "oriented_detection"]
Backend = Literal[tuple(BACKENDS)]  # type: ignore[valid-type]  # the backend table, backends/base.py


class ModelSpec(_Strict):
    """Where the PyTorch model comes from."""

    source: Text = Field(
        max_length=300,
        description="An edgevision model (unet, segnet, yolo), a torchvision builder name "
        "(resnet18, lraspp_mobilenet_v3_large, ...), 'ultralytics' (with an Ultralytics checkpoint), "
        "'ultralytics:<model>.yaml' (yolov8n.yaml, yolo11n-seg.yaml, ...), 'timm:<name>', or 'package.module:factory'."
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the builder.")
    checkpoint: Optional[SafePath] = Field(
        None, description="A state_dict (or {'model'|'state_dict': ...}) saved with torch.save; for source "
        "'ultralytics', an Ultralytics checkpoint (best.pt)."
    )
    trust_checkpoint: bool = Field(False, description="Allow loading a checkpoint that is a pickle (Ultralytics .pt "
                                   "files): loading one runs code from the file. Plain state_dicts never need it.")
    num_classes: Optional[int] = Field(None, ge=1, le=100_000, description="Defaults to len(labels).")
    labels: Optional[list[Annotated[Text, Field(max_length=200)]]] = Field(None, min_length=1, max_length=100_000,
                                                                        description="Class names, index order.")

    @model_validator(mode="after")
    def _labels_match(self) -> "ModelSpec":
        if self.labels is not None and self.num_classes is not None and len(self.labels) != self.num_classes:
            raise ValueError(
                f"num_classes is {self.num_classes} but labels has {len(self.labels)} names; "
                "make them agree or drop num_classes"
            )
        return self

    @property
    def classes(self) -> Optional[int]:
        return self.num_classes if self.num_classes is not None else (len(self.labels) if self.labels else None)


Mean = Annotated[float, Field(ge=-10, le=10)]
Std = Annotated[float, Field(ge=1e-3, le=10)]


class InputSection(_Strict):
    """How an image becomes the network input (the runtime does exactly this, in OpenCV); the
    defaults are records.InputSpec's."""

    size: tuple[int, int] = Field(description="Network input [height, width] in pixels.")
    mean: Annotated[tuple[Mean, Mean, Mean], BeforeValidator(_tuple)] = Field(InputSpec.mean, description="Per "
                                                                              "channel, on 0..1 pixels.")
    std: Annotated[tuple[Std, Std, Std], BeforeValidator(_tuple)] = Field(InputSpec.std, description="Per channel, on 0..1 pixels (0.001..10).")
    channel_order: Literal["rgb", "bgr"] = Field(InputSpec.channel_order, description="Channel order the network expects.")
    resize: Literal["stretch", "letterbox", "center_crop"] = Field(
        InputSpec.resize, description="stretch: the whole image to size; letterbox: scaled to fit, centred, padded "
        "with pad_value; center_crop (classification): scaled so the shorter side fills it, the centre cropped "
        "(Ultralytics' and torchvision's Resize + CenterCrop).")
    pad_value: int = Field(InputSpec.pad_value, ge=0, le=255, description="Letterbox padding value (0..255).")
    layout: Literal["nchw", "nhwc"] = InputSpec.layout

    def spec(self) -> InputSpec:
        """The runtime's record of this section."""
        return InputSpec.from_dict(self.model_dump(mode="json"))

    @field_validator("size", mode="before")
    @classmethod
    def _square(cls, v: Any) -> Any:
        return (v, v) if isinstance(v, int) and not isinstance(v, bool) else _tuple(v)

    @field_validator("size")
    @classmethod
    def _positive(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 16 or max(v) > 4096:
            raise ValueError(f"{list(v)} is out of range; each side must be 16..4096 pixels")
        return v


class NMSSpec(_Strict):
    """Detection post-processing (the canonical NMS); unset fields take the model's own defaults."""

    score_threshold: Optional[float] = Field(None, ge=0, lt=1)
    iou_threshold: Optional[float] = Field(None, gt=0, le=1)
    max_detections: Optional[int] = Field(None, ge=1, le=10000)
    pre_nms_top_k: Optional[int] = Field(None, ge=1, le=1_000_000)
    class_agnostic: Optional[bool] = None
    multi_label: Optional[bool] = Field(None, description="Ultralytics models: keep a box for every class above the "
                                        "threshold (as Ultralytics' validator) instead of its best class only (as its "
                                        "predictor, the default). torchvision's detectors always keep every class.")


class ProposalsSpec(_Strict):
    """External-proposal mode: predict(image, proposals=[[x0, y0, x1, y1], ...]); without proposals
    the runtime uses a fixed multi-scale grid of boxes."""

    style: Literal["fast_rcnn", "rcnn"] = Field(description="fast_rcnn: a torchvision Faster R-CNN's backbone "
                                                "features + RoI Align + box head; rcnn: each proposal cropped from "
                                                "the image (RoI Align) and warped to crop x crop, then a classifier.")
    max: int = Field(300, ge=1, le=5000, description="Proposals per image (the graph input is padded to this many).")
    crop: int = Field(64, ge=8, le=512, description="rcnn: side of the warped crop given to the classifier.")


class ExportSpec(_Strict):
    opset: int = Field(18, ge=17, le=21, description="ONNX opset (ONNX Runtime's RoiAlign needs <= 21).")
    dynamic_batch: bool = True
    exporter: Literal["dynamo", "torchscript"] = Field(
        "dynamo", description="torch.onnx exporter; 'torchscript' is the legacy one."
    )
    argmax: bool = Field(False, description="Segmentation: add an in-graph argmax output 'labels'.")
    nms: NMSSpec = Field(NMSSpec(), description="Detection: thresholds of the NMS fused into the graph.")
    end2end: Optional[bool] = Field(None, description="Ultralytics heads with an NMS-free one-to-one branch (YOLO26, "
                                    "YOLOv10): true exports that branch (top-k, no NMS; Ultralytics' nms=False), "
                                    "false the one-to-many branch with the NMS. Unset: the branch Ultralytics' "
                                    "predictor runs by default (one-to-many with NMS, unless fusion removed it).")
    proposals: Optional[ProposalsSpec] = Field(None, description="Detection: export only the second stage, with "
                                                 "region proposals as a second input (external-proposal mode).")


class TargetSpec(_Strict):
    backend: Backend
    precision: Precision = "fp32"
    device: Text = Field(None, max_length=40, validate_default=False, description="Where it runs: " + "; ".join(
        f"{b.name}: {', '.join(b.devices)} (default {b.devices[0]})" for b in BACKENDS.values()) + ".")
    options: dict[str, Any] = Field(default_factory=dict, description="Backend-specific settings: " + "; ".join(
        f"{b.name}: {', '.join(b.options)}" for b in BACKENDS.values()) + ".")

    @model_validator(mode="before")
    @classmethod
    def _default_device(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("backend"), str) and data["backend"] in BACKENDS \
                and data.get("device") is None:
            return {**data, "device": BACKENDS[data["backend"]].devices[0]}
        return data

    @model_validator(mode="after")
    def _supported(self) -> "TargetSpec":
        info = BACKENDS[self.backend]
        if self.precision not in info.precisions:
            why = info.refusal(self.precision)
            raise ValueError(
                f"backend '{self.backend}' does not build precision '{self.precision}' "
                + (f"({why}; it builds {', '.join(info.precisions)})" if why else f"yet (supported: {', '.join(info.precisions)})")
            )
        if re.split(r"[:.]", self.device.lower())[0] not in info.devices:  # cuda:1, GPU.0
            cuda = "; cuda:N picks a GPU" if "cuda" in info.devices else ""
            raise ValueError(f"backend '{self.backend}' has no device '{self.device}' (its devices: "
                             f"{', '.join(info.devices)}{cuda})")
        problem = unknown_options(self.backend, self.options)  # before any training or export
        if problem:
            raise ValueError(problem)
        return self

    @property
    def variant(self) -> str:
        return f"{self.backend}-{self.precision}"


class Recipe(_Strict):
    """The recipe. For model sources that record their own input size, normalisation, labels and task
    (ultralytics, timm), the recipe's missing fields are taken from the source."""

    name: str = Field(max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Artifact name (letters, digits, -_.).")
    task: Task
    model: ModelSpec
    input: InputSection
    export: ExportSpec = ExportSpec()
    targets: list[TargetSpec] = Field(min_length=1)
    verify: VerifySpec = VerifySpec()
    data: DataSpec = DataSpec()
    train: Optional[TrainSpec] = None
    calibration: Optional[CalibrationSpec] = Field(
        None, description="INT8 calibration images; default: 300 images of data.train.")
    benchmark: BenchmarkSpec = BenchmarkSpec()
    output: Optional[SafePath] = Field(None, description="Artifact directory (default: build/<name>); never the "
                                       "working directory, one holding it or the recipe, or a folder that is not an "
                                       "edgevision artifact.")

    @model_validator(mode="after")
    def _consistent(self) -> "Recipe":
        names = [t.variant for t in self.targets]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"targets: variant {dup[0]} is listed twice")
        if self.train is not None and self.data.train is None:
            raise ValueError("train: needs data.train (the images to train on)")
        if any(t.precision == "int8" for t in self.targets) and self.calibration is None and self.data.train is None:
            raise ValueError("calibration: int8 targets need calibration images; add a 'calibration' section "
                             "(see calibration/README.md) or data.train")
        for i, target in enumerate(self.targets):
            info = BACKENDS[target.backend]
            if info.tasks is not None and self.task is not None and self.task not in info.tasks:  # None: from the source
                why = info.refusal(self.task) or f"it carries {', '.join(info.tasks)}"
                raise ValueError(f"targets[{i}]: backend '{target.backend}' cannot carry task '{self.task}': {why}")
        if getattr(self.input, "resize", None) == "center_crop" and self.task not in (None, "classification"):
            raise ValueError(f"input.resize: center_crop is for task classification (it cuts off the image's edges, "
                             f"where task '{self.task}' has results); use letterbox or stretch")
        if getattr(self.input, "resize", None) == "stretch" and self.task == "oriented_detection":
            raise ValueError("input.resize: stretch would turn rotated boxes into parallelograms; oriented_detection "
                             "needs letterbox (Ultralytics' own)")
        if self.export.proposals is not None and self.task != "detection":
            raise ValueError(f"export.proposals: external-proposal mode is for task detection, not '{self.task}'")
        if self.export.proposals is not None and any(t.precision == "int8" for t in self.targets):
            raise ValueError("export.proposals: int8 targets are not built in external-proposal mode yet (calibration "
                             "feeds images only); use fp32, fp16 or bf16")
        if max(self.benchmark.batch_sizes) > 1 and not self.export.dynamic_batch:
            raise ValueError(f"benchmark.batch_sizes: {self.benchmark.batch_sizes} needs export.dynamic_batch: true "
                             "(the graph is exported for batch 1)")
        return self

    @property
    def calibration_source(self) -> Optional["CalibrationSpec"]:
        """The calibration section, else data.train as 300 calibration images."""
        if self.calibration is not None:
            return self.calibration
        if self.data.train is None:
            return None
        return CalibrationSpec(**{**self.data.train.model_dump(), "count": 300})

    @property
    def output_dir(self) -> Path:
        return self.output if self.output is not None else Path("build") / self.name

    def digest(self) -> str:
        """sha256 of the validated recipe (canonical JSON), recorded in the manifest."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


class _SourceDraft(Recipe):
    """A recipe whose model source (ultralytics, timm) records what the recipe may leave out: every other
    section is validated before the source is read (reading an Ultralytics checkpoint runs code, so
    model.trust_checkpoint must be a validated bool first); input is checked once filled in."""

    task: Optional[Task] = None  # type: ignore[assignment]
    input: Optional[dict[str, Any]] = None  # type: ignore[assignment]


def load_recipe(path: Union[str, Path]) -> Recipe:
    """Read and validate a recipe file; every problem raises RecipeError naming file and field."""
    path = Path(path)
    data = parse_yaml(read_recipe_text(path), str(path))
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of keys (name, task, model, ...), got {type(data).__name__}")
    return parse_recipe(data, source=str(path))


def parse_recipe(data: dict[str, Any], source: str = "recipe") -> Recipe:
    """Validate a recipe; for ultralytics / timm sources, fill what the recipe leaves out from what
    the source records (models/external.fill_recipe), after everything else is valid."""
    model = data.get("model") if isinstance(data, dict) else None
    if isinstance(model, dict) and isinstance(model.get("source"), str) and model["source"].startswith(
            ("ultralytics", "timm:")):
        from edgevision.models.external import fill_recipe

        draft = _validate(_SourceDraft, data, source)
        try:
            data = fill_recipe(data, draft.model, draft.task)
        except ValueError as e:
            raise RecipeError(f"{source}: task: {e}") from None
    return _validate(Recipe, data, source)


def _validate(kind: type[Recipe], data: Any, source: str) -> Recipe:
    try:
        return kind.model_validate(data)
    except ValidationError as e:
        raise RecipeError(format_errors(Recipe, e.errors(), source)) from None


def json_schema() -> dict[str, Any]:
    schema = Recipe.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "edgevision recipe"
    schema["required"] = [k for k in schema["required"] if k not in ("input", "task")]  # ultralytics / timm: from the source
    size = schema["$defs"]["InputSection"]["properties"]["size"]
    schema["$defs"]["InputSection"]["properties"]["size"] = {"anyOf": [{"type": "integer"}, size], "description": size.pop(
        "description", "") + " One number: a square."}
    schema["properties"]["input"]["description"] = ("Required, except for model sources that record it (ultralytics, "
                                                    "timm), where it overrides what they record.")
    return schema
