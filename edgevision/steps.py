"""The compile, step by step. api.compile runs them in order:

    prepare   recipe (labels resolved, checkpoint present) -> Job: the PyTorch reference, data.val
    export    Job -> Exported: model.onnx in the staging folder, the model's ModelInfo
    prepare_checks  Job, Exported -> Checks: verification feeds, PyTorch's outputs on them, the
              baseline accuracy, the build context (calibration set, accuracy probe)
    build     one target -> VariantRecord (built, opened, compared with PyTorch) and its open runner
    measure   (verify/measure.py) accuracy, the accuracy gate and interleaved latency -> new records
    write     the records -> variant.json per variant and manifest.json, in the staging folder

Each step takes records and returns a new one; none changes what it was given. Committing the
staging folder (or writing <output>.failed) stays with api.compile.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edgevision.artifact import file_entries, sha256_file, write_manifest, write_variant
from edgevision.bench.advice import from_manifest as advice_from_manifest
from edgevision.bench.machine import cpu_name, tool_versions
from edgevision.builders import BuildContext, build_variant, open_runner
from edgevision.data import open_dataset
from edgevision.data.shapes import ShapesDataset
from edgevision.errors import DataError, EdgeVisionError, RecipeError
from edgevision.ops.nms import NMSParams
from edgevision.recipe import Recipe, TargetSpec
from edgevision.records import INPUT_NAME, Manifest, ModelInfo, VariantRecord
from edgevision.reporting import Reporter
from edgevision.runtime.predictor import Predictor
from edgevision.runtime.preprocess import preprocess
from edgevision.runtime.proposals import PROPOSALS, proposal_batch
from edgevision.tasks import DETECTION_TASKS, METRIC
from edgevision.verify.measure import evaluate_model
from edgevision.verify.reference import REFERENCE
from edgevision.verify.reference import reference as pytorch_reference


@dataclass(frozen=True)
class Job:
    """A compile's fixed inputs: the recipe, the PyTorch reference, data.val, where progress goes."""

    recipe: Recipe
    wrapper: Any  # the export wrapper (export.onnx_export.ExportWrapper)
    nms: Optional[NMSParams]
    reference: Any  # a runner with the artifacts' outputs (verify.reference.TorchRunner)
    val: Any  # data.val as a dataset, or None
    reporter: Reporter
    threads: int


@dataclass(frozen=True)
class Exported:
    onnx: Path  # model.onnx in the staging folder
    info: ModelInfo
    stats: Dict[str, Any]  # the exporter's report (nodes, seconds, ...)
    pre_nms: Optional[Path]  # detectors whose NMS the TensorRT builder swaps: the graph before it


@dataclass(frozen=True)
class Checks:
    feeds: List[Dict[str, np.ndarray]]  # pre-processed verification batches
    expected: List[Dict[str, np.ndarray]]  # PyTorch's outputs on them
    verified_on: str  # where the images came from, for the summary
    baseline_accuracy: Optional[Dict[str, Any]]  # PyTorch FP32 on data.val
    context: BuildContext


def prepare(recipe: Recipe, reporter: Reporter, threads: int) -> Job:
    """The PyTorch reference and data.val of a recipe whose labels are resolved and checkpoint exists."""
    wrapper, nms, reference = pytorch_reference(recipe)
    val = open_dataset(recipe.data.val, recipe.input.size) if recipe.data.val else None
    if val is not None:
        _check_label_space(recipe, val)
    return Job(recipe, wrapper, nms, reference, val, reporter, threads)


def export(job: Job, root: Path, scratch: Path) -> Exported:
    from edgevision.export.onnx_export import export_onnx

    recipe, labels = job.recipe, list(job.recipe.model.labels or [])
    job.reporter.info(f"exporting {recipe.model.source} to ONNX ({recipe.export.exporter}, opset {recipe.export.opset})")
    pre_nms = scratch / "pre_nms.onnx" if job.wrapper.appends_nms else None
    stats = export_onnx(job.wrapper, recipe, root / "model.onnx", labels, job.nms, pre_nms)
    head = f"; head: {stats['head']}" if "head" in stats else ""
    job.reporter.info(f"exported: {stats['nodes']} nodes ({stats['nodes_exported']} before cleanup) in {stats['seconds']} s{head}")
    info = ModelInfo(task=recipe.task, labels=tuple(labels), input=recipe.input.spec(),
                     outputs=tuple(job.wrapper.contract_names), max_batch=64 if recipe.export.dynamic_batch else 1,
                     proposals=recipe.export.proposals.max if recipe.export.proposals is not None else None,
                     input_name=INPUT_NAME, nms=job.nms.to_dict() if job.nms is not None else None)
    return Exported(root / "model.onnx", info, stats, pre_nms)


def prepare_checks(job: Job, exported: Exported) -> Checks:
    feeds, verified_on = _verification_feeds(job.recipe, job.val)
    expected = [job.reference.infer(f) for f in feeds]
    baseline = None
    if job.val is not None:
        baseline = evaluate_model(Predictor(exported.info, job.reference, REFERENCE), job.val, job.reporter)
    context = _build_context(job, exported.info, exported.pre_nms, baseline)
    return Checks(feeds, expected, verified_on, baseline, context)


def build(job: Job, exported: Exported, checks: Checks, target: TargetSpec) -> Tuple[VariantRecord, Optional[Any]]:
    """Build one target, open its runner and compare it with PyTorch on the verification feeds:
    (its record, its open runner for the measurements; the caller closes it). A variant that could
    not be built or opened has status "error" and no runner."""
    from edgevision.verify.parity import compare, judge

    vdir = exported.onnx.parent / target.variant
    vdir.mkdir()
    record = VariantRecord(target.variant, target.backend, target.precision, device=target.device,
                           options=dict(target.options))
    job.reporter.info(f"building {record.name}")
    start = time.perf_counter()
    runner = None
    try:
        settings = build_variant(target, exported.onnx, vdir, checks.context)
        record = replace(record, settings=settings, build_seconds=round(time.perf_counter() - start, 2),
                         size_mb=round(sum(p.stat().st_size for p in vdir.iterdir()) / 1e6, 3))
        runner, note = open_runner(record, vdir, job.threads)
        tolerance = job.recipe.verify.tolerance(target.precision, job.recipe.task)
        parity = compare(job.recipe.task, checks.expected, [runner.infer(f) for f in checks.feeds], tolerance)
        record = replace(record, verified_with=note, parity=parity,
                         execution_precision=getattr(runner, "execution_precision", None))
    except BaseException as e:
        if runner is not None:
            runner.close()
        if not isinstance(e, EdgeVisionError):
            raise
        return replace(record, status="error", reasons=(str(e),)), None
    reasons = judge(record.parity, tolerance)
    record = replace(record, status="failed" if reasons else "passed", reasons=tuple(reasons), files=file_entries(vdir))
    return record, runner


def write(job: Job, exported: Exported, checks: Checks, variants: List[VariantRecord],
          baseline: Dict[str, Any]) -> Manifest:
    """variant.json into every variant folder, then manifest.json (with every file's sha256)."""
    recipe, root = job.recipe, exported.onnx.parent
    ckpt = recipe.model.checkpoint
    manifest = Manifest(
        name=recipe.name, info=exported.info, variants=tuple(variants), created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        model={"source": recipe.model.source, "kwargs": recipe.model.kwargs, "checkpoint": str(ckpt) if ckpt else None,
               "checkpoint_sha256": sha256_file(ckpt) if ckpt else None},
        export=exported.stats, recipe={"sha256": recipe.digest(), "content": recipe.model_dump(mode="json")},
        tools=tool_versions(), machine={"platform": platform.platform(), "processor": cpu_name(), "cores": os.cpu_count()},
        baseline=baseline, verified_on=checks.verified_on)
    manifest = replace(manifest, advice=advice_from_manifest(manifest, METRIC[recipe.task]).to_dict())
    for v in variants:
        limit = (v.settings or {}).get("max_batch")  # a variant that takes fewer images than the export
        info = exported.info if limit is None else replace(exported.info, max_batch=min(exported.info.max_batch, limit))
        write_variant(root / v.name, info, v)
    manifest = replace(manifest, files=file_entries(root))
    write_manifest(root, manifest)
    return manifest


def _build_context(job: Job, info: ModelInfo, pre_nms: Optional[Path],
                   baseline: Optional[Dict[str, Any]]) -> BuildContext:
    """What the builders need: the graph before NMS, and for INT8 the calibration set (loaded once),
    the cache switch, and the accuracy probe when calibration.accuracy_control is on."""
    from edgevision.data import Selection
    from edgevision.eval.metrics import evaluate
    from edgevision.quantize.accuracy import AccuracyProbe
    from edgevision.quantize.calibration import load_calibration

    recipe, spec = job.recipe, job.recipe.calibration_source
    plain = BuildContext(pre_nms=pre_nms, nms=job.nms, log=job.reporter.info, module=job.wrapper)
    if spec is None or not any(t.precision == "int8" for t in recipe.targets):
        return plain
    job.reporter.info(f"loading {spec.count} calibration images ({spec.source}{': ' + str(spec.path) if spec.path else ''})")
    calib = load_calibration(spec, recipe.input.spec(), job.reporter.info)
    metric = METRIC[recipe.task]
    limit = getattr(recipe.verify.max_drop, metric)
    probe = None
    if spec.accuracy_control:
        if baseline is None or limit is None:
            raise RecipeError(f"calibration.accuracy_control: needs data.val and verify.max_drop.{metric}")
        val = job.val
        probe = AccuracyProbe(
            metric, float(baseline[metric]), limit / 100.0, len(val),
            lambda runner, idx: evaluate(Predictor(info, runner), val if idx is None else Selection(val, idx)),
            list(info.outputs), job.threads)
    return replace(plain, calibration=calib, cache=spec.cache, accuracy=probe)


def _check_label_space(recipe: Recipe, val: Any) -> None:
    labels = list(recipe.model.labels or [])
    if not val.categories:
        return
    if recipe.task in DETECTION_TASKS:  # matched by name; extra labels such as 'background' are fine
        missing = [c for c in val.categories if c not in labels]
        if missing:
            raise DataError(f"data.val ({val.name}) has categories {missing} that are not in model.labels {labels}")
        return
    expected = len(val.categories) + (1 if recipe.task == "segmentation" else 0)
    if expected != len(labels):
        raise DataError(
            f"data.val ({val.name}) has {len(val.categories)} categories but the model has {len(labels)} labels "
            f"{labels}; for segmentation, labels are background + the dataset's categories"
        )


def _verification_feeds(recipe: Recipe, val: Any) -> Tuple[List[Dict[str, np.ndarray]], str]:
    """Pre-processed batches of verify.images images (verify.data, else data.val, else generated
    shapes), and where they came from, for the summary."""
    n = recipe.verify.images
    if recipe.verify.data is not None:
        source, origin = open_dataset(recipe.verify.data, recipe.input.size), f"verify.data ({_describe(recipe.verify.data)})"
    elif val is not None and len(val) > 0:
        source, origin = val, f"data.val ({_describe(recipe.data.val)})"
    else:
        source = ShapesDataset(count=n, seed=9999, size=recipe.input.size)
        origin = "generated shapes images (no verify.data or data.val: set one to verify on your kind of images)"
    images = [source[i].image for i in range(min(n, len(source)))]
    if not images:
        raise DataError(f"{origin}: no images to verify on")
    spec = recipe.input.spec()
    batch = 4 if recipe.export.dynamic_batch else 1
    feeds = []
    for i in range(0, len(images), batch):
        pixels, transforms = preprocess(images[i : i + batch], spec)
        feed = {INPUT_NAME: pixels}
        if recipe.export.proposals is not None:  # the runtime's default proposals (a grid of boxes)
            feed[PROPOSALS] = proposal_batch(None, transforms, recipe.export.proposals.max, spec.size)
        feeds.append(feed)
    return feeds, f"{len(images)} images from {origin}"


def _describe(source: Any) -> str:
    return source.source + (f" {source.path}" if source.path else "")
