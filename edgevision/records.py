"""The artifact's typed records, at the bottom of the package (stdlib only): the network input
(InputSpec), what every variant of a model shares (ModelInfo), one variant as built and verified
(VariantRecord), and manifest.json as a whole (Manifest). artifact.py reads and writes them; the
compile builds them; the runtime, the benchmark and the console read them.

JSON layout (schema_version 1, unchanged since the first artifacts): ModelInfo's fields sit at the
top level of manifest.json and of every variant.json ("task", "labels", "input" with the input's
name, dtype, max_batch and proposals folded in, "outputs", "nms"); a variant.json adds its
VariantRecord's fields and its own sha256. Every record is frozen: a step that changes one returns
a new one (dataclasses.replace).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional, Tuple

from edgevision.tasks import TASKS

SCHEMA_VERSION = 1
INPUT_NAME = "images"  # the network input of every exported graph


class RecordError(ValueError):
    """A record's JSON is malformed: the message says which field (artifact.py names the file)."""


@dataclass(frozen=True)
class InputSpec:
    """How an image becomes the network input (the recipe's `input` section, as the runtime uses it)."""

    size: Tuple[int, int]  # network (height, width)
    mean: Tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: Tuple[float, float, float] = (0.229, 0.224, 0.225)
    channel_order: str = "rgb"
    resize: str = "stretch"
    pad_value: int = 114
    layout: str = "nchw"

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "InputSpec":
        if not (_numbers(d.get("size"), 2, integer=True) and _numbers(d.get("mean"), 3) and _numbers(d.get("std"), 3)):
            raise RecordError("'input' needs size [height, width] and mean / std of 3 numbers")
        return cls(
            size=(int(d["size"][0]), int(d["size"][1])),
            mean=tuple(float(v) for v in d["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in d["std"]),  # type: ignore[arg-type]
            channel_order=d.get("channel_order", "rgb"),
            resize=d.get("resize", "stretch"),
            pad_value=int(d.get("pad_value", 114)),
            layout=d.get("layout", "nchw"),
        )

    def to_dict(self) -> Dict[str, Any]:
        return {"size": list(self.size), "mean": list(self.mean), "std": list(self.std),
                "channel_order": self.channel_order, "resize": self.resize, "pad_value": self.pad_value,
                "layout": self.layout}


@dataclass(frozen=True)
class ModelInfo:
    """The model's contract with the runtime, shared by every variant of an artifact."""

    task: str
    labels: Tuple[str, ...]
    input: InputSpec
    outputs: Tuple[str, ...]
    max_batch: int = 1  # images per call the graph takes (a variant may take fewer)
    proposals: Optional[int] = None  # external-proposal artifacts: boxes per image
    input_name: str = INPUT_NAME
    nms: Optional[Dict[str, Any]] = None  # detection post-processing parameters (ops.nms.NMSParams)

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "ModelInfo":
        problems = [f"'{key}' must be a {kind.__name__}" for key, kind in
                    (("task", str), ("labels", list), ("input", dict), ("outputs", list)) if not isinstance(d.get(key), kind)]
        if problems:
            raise RecordError("; ".join(problems))
        if d["task"] not in TASKS:
            raise RecordError(f"task {d['task']!r} is not one of {', '.join(TASKS)}")
        if not all(isinstance(x, str) for x in d["labels"] + d["outputs"]) or not d["outputs"]:
            raise RecordError("'labels' and 'outputs' must be lists of names (outputs not empty)")
        inp = d["input"]
        proposals = inp.get("proposals")
        return cls(task=d["task"], labels=tuple(d["labels"]), input=InputSpec.from_dict(inp), outputs=tuple(d["outputs"]),
                   max_batch=int(inp.get("max_batch", 1)), proposals=int(proposals) if proposals is not None else None,
                   input_name=str(inp.get("name", INPUT_NAME)), nms=d.get("nms"))

    def to_json(self) -> Dict[str, Any]:
        inp = {**self.input.to_dict(), "name": self.input_name, "dtype": "float32", "max_batch": self.max_batch}
        if self.proposals is not None:
            inp["proposals"] = self.proposals
        out = {"schema_version": SCHEMA_VERSION, "task": self.task, "labels": list(self.labels), "input": inp,
               "outputs": list(self.outputs)}
        if self.nms is not None:
            out["nms"] = self.nms
        return out


@dataclass(frozen=True)
class VariantRecord:
    """One variant: what was built (backend, precision, the runner's settings and files) and what
    the verification found (status, reasons, parity, accuracy, latency)."""

    name: str
    backend: str
    precision: str
    device: str = "cpu"
    options: Dict[str, Any] = field(default_factory=dict)  # the recipe's backend options
    settings: Optional[Dict[str, Any]] = None  # the runner's settings: files by role, precision hints...
    status: str = "error"  # passed / failed / error
    reasons: Tuple[str, ...] = ()
    build_seconds: Optional[float] = None
    size_mb: Optional[float] = None
    verified_with: Optional[str] = None  # a backend verified by CPU emulation says how
    parity: Optional[Dict[str, Any]] = None
    execution_precision: Optional[str] = None
    files: Optional[Dict[str, Dict[str, Any]]] = None  # sha256 and size by path in the variant folder
    accuracy: Optional[Dict[str, Any]] = None
    accuracy_drop: Optional[float] = None  # points below PyTorch FP32
    latency: Optional[Dict[str, Any]] = None  # compile-time timing: infer / e2e summaries

    # what a variant.json carries (the rest stays in the manifest)
    PUBLIC = ("name", "backend", "precision", "device", "settings", "files", "status", "reasons", "parity", "accuracy",
              "accuracy_drop", "execution_precision", "verified_with")

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "VariantRecord":
        problems = [f"'{key}' must be a {kind.__name__}" for key, kind in
                    (("name", str), ("backend", str), ("precision", str)) if not isinstance(d.get(key), kind)]
        if problems:
            raise RecordError("; ".join(problems))
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        values["reasons"] = tuple(values.get("reasons") or ())
        return cls(**values)

    def to_json(self, keys: Tuple[str, ...] = ()) -> Dict[str, Any]:
        """The fields that are set (all, or those in `keys`), in declaration order."""
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        return {k: v for k, v in data.items() if v is not None and (not keys or k in keys)}


@dataclass(frozen=True)
class Manifest:
    """manifest.json: the model, every variant, and how the artifact was made (dicts that are
    reports of their own stay dicts: export statistics, the recipe, tools, machine, advice)."""

    name: str
    info: ModelInfo
    variants: Tuple[VariantRecord, ...]
    created: str = ""
    model: Dict[str, Any] = field(default_factory=dict)  # source, kwargs, checkpoint and its sha256
    export: Dict[str, Any] = field(default_factory=dict)
    recipe: Dict[str, Any] = field(default_factory=dict)  # sha256 and content
    tools: Dict[str, Any] = field(default_factory=dict)
    machine: Dict[str, Any] = field(default_factory=dict)
    baseline: Dict[str, Any] = field(default_factory=dict)  # PyTorch FP32: accuracy, latency, threads
    verified_on: Optional[str] = None
    advice: Optional[Dict[str, Any]] = None
    files: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Manifest":
        variants = d.get("variants")
        if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
            raise RecordError("'variants' must be a list of entries with a name")
        if not isinstance(d.get("name"), str):
            raise RecordError("'name' must be a str")
        rest = {f.name: d[f.name] for f in fields(cls) if f.name not in ("name", "info", "variants") and f.name in d}
        return cls(name=d["name"], info=ModelInfo.from_json(d), variants=tuple(VariantRecord.from_json(v) for v in variants),
                   **rest)

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {**self.info.to_json(), "name": self.name, "created": self.created, "model": self.model,
                               "export": self.export, "recipe": self.recipe, "tools": self.tools, "machine": self.machine,
                               "baseline": self.baseline, "variants": [v.to_json() for v in self.variants]}
        if self.verified_on is not None:
            out["verified_on"] = self.verified_on
        if self.advice is not None:
            out["advice"] = self.advice
        out["files"] = self.files
        return out

    def variant(self, name: str) -> VariantRecord:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    @property
    def names(self) -> List[str]:
        return [v.name for v in self.variants]


def _numbers(value: Any, n: int, integer: bool = False) -> bool:
    kinds = (int,) if integer else (int, float)
    return (isinstance(value, list) and len(value) == n
            and all(isinstance(v, kinds) and not isinstance(v, bool) and (not integer or v > 0) for v in value))
