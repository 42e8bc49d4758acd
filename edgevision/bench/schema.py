"""The schema of the benchmark's report.json (pydantic). `edgevision schema --report` prints it as
JSON Schema; docs/report.schema.json is that schema, committed (a test keeps them equal). Times
are milliseconds, sizes megabytes, accuracy metrics fractions (0..1), accuracy drops points
(percent), throughput images per second.
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Stats(_Model):
    """Summary of a sample of timings in ms (percentiles by linear interpolation)."""

    n: int = Field(ge=1, description="Timed calls.")
    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float


class Latency(_Model):
    infer: Stats = Field(description="Engine only: the runner's infer() on a pre-processed batch of 1.")
    e2e: Stats = Field(description="End to end: Predictor.predict(JPEG path), decode + pre-process + infer + post-process.")
    infer_samples_ms: List[float] = Field(description="Every timed infer() call, in order.")
    e2e_samples_ms: List[float] = Field(description="Every timed predict() call, in order.")


class Throughput(_Model):
    mode: Literal["sync", "async"] = Field(description="sync: one request at a time; async: many in flight.")
    batch: int = Field(ge=1)
    fps: float = Field(description="Images per second, engine only.")
    requests: int = Field(ge=1, description="Requests in flight.")
    detail: Dict[str, Any] = Field(default_factory=dict, description="Backend settings (OpenVINO: streams, hint).")


class Memory(_Model):
    rss_start_mb: Optional[float] = Field(description="Resident memory of the probe process before loading the model.")
    peak_rss_mb: float = Field(description="Peak resident memory of a process that loads the model and predicts.")


class Accuracy(_Model):
    images: int
    map: Optional[float] = Field(None, description="Detection: box mAP@[.5:.95] (COCO, faster-coco-eval).")
    map50: Optional[float] = Field(None, description="Detection: box mAP@.5.")
    mask_map: Optional[float] = Field(None, description="Instance segmentation: mask mAP@[.5:.95].")
    miou: Optional[float] = Field(None, description="Segmentation: mean IoU over classes.")
    top1: Optional[float] = Field(None, description="Classification: top-1 accuracy.")
    top5: Optional[float] = Field(None, description="Classification: top-5 accuracy.")


class VariantRow(_Model):
    name: str
    backend: str
    precision: str
    device: str
    baseline: bool = Field(description="True for the PyTorch FP32 model the artifact was compiled from.")
    status: Literal["reference", "passed", "failed", "error", "skipped"] = Field(
        description="The compile's verdict (passed/failed/error), 'reference' for the baseline, 'skipped' when this "
        "machine cannot run it (reasons say why).")
    reasons: List[str] = Field(description="Why a variant failed, errored or was skipped.")
    notes: List[str] = Field(description="Caveats about this row's numbers.")
    size_mb: Optional[float] = None
    compile_seconds: Optional[float] = Field(None, description="Build time of this variant (from the manifest).")
    accuracy: Optional[Accuracy] = None
    accuracy_drop: Optional[float] = Field(None, description="Points below the baseline on the artifact's metric.")
    latency: Optional[Latency] = None
    speedup: Optional[Dict[Literal["infer", "e2e"], float]] = Field(None, description="Baseline p50 / this p50.")
    throughput: List[Throughput] = Field(default_factory=list)
    memory: Optional[Memory] = None


class ArtifactInfo(_Model):
    path: str
    name: str
    task: str
    input_size: List[int]
    metric: Literal["map", "miou", "top1"] = Field(description="The accuracy metric the table and the gate use.")
    compiled: Optional[str]
    recipe_sha256: str
    export_seconds: Optional[float]


class Machine(_Model):
    cpu: str
    cores: Optional[int]
    threads: Optional[int] = Field(description="Threads given to every model, the baseline included.")
    isa: List[str] = Field(description="Instruction-set extensions present (AVX-512, VNNI, AMX, NEON...).")
    platform: str
    libraries: Dict[str, Optional[str]]


class Settings(_Model):
    iterations: Optional[int] = Field(description="Interleaved rounds per latency measurement (None: duration-bound).")
    duration: Optional[float] = Field(description="Seconds per latency measurement, if duration-bound.")
    warmup: int
    batch_sizes: List[int]
    async_seconds: float
    accuracy: bool
    memory: bool
    accuracy_images: Optional[int] = Field(description="Cap on data.val images (None: all).")
    quick: bool
    threads: int
    e2e_input: str


class Pick(_Model):
    variant: str
    e2e_ms: Optional[float] = Field(None, description="Latency pick: its end-to-end p50.")
    fps: Optional[float] = Field(None, description="Throughput pick: its images per second.")
    next: Optional[str] = Field(description="The runner-up.")
    margin: Optional[float] = Field(description="How many times better than the runner-up.")


class Advice(_Model):
    latency: Optional[Pick] = Field(description="The passed variant with the lowest end-to-end p50 at batch 1.")
    throughput: Optional[Pick] = Field(description="The passed variant with the most images per second.")
    notes: Dict[str, List[str]] = Field(description="Per variant: INT8 not worth shipping, dominated variants.")


class Report(_Model):
    schema_version: Literal[1]
    kind: Literal["edgevision.benchmark"]
    edgevision: str
    created: str
    seconds: float = Field(description="Wall time of the whole benchmark.")
    artifact: ArtifactInfo
    machine: Machine
    settings: Settings
    notes: List[str] = Field(default_factory=list, description="Caveats about the whole run (e.g. no accuracy: the recipe has no data.val).")
    variants: List[VariantRow] = Field(description="The baseline first, then every variant of the artifact, failed ones included.")
    advice: Advice = Field(description="What to ship on this machine (bench/advice.py).")


def json_schema() -> Dict[str, Any]:
    return Report.model_json_schema()
