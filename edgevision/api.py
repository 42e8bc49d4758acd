"""compile(recipe) -> artifact directory; train(recipe) -> checkpoint.

The flow: recipe -> model -> export -> build per target -> verify against PyTorch
(parity and accuracy) -> artifact directory, committed atomically. Nothing here prints directly;
progress goes through a Reporter.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from edgevision.artifact import (MANIFEST, SCHEMA_VERSION, VARIANT, content_digest, file_entries, read_manifest, sha256_file,
                                 write_json)
from edgevision.backends.base import BACKENDS, INPUT_NAME, create_runner, require
from edgevision.bench.advice import from_manifest as advice_from_manifest
from edgevision.bench.machine import cpu_name, tool_versions
from edgevision.builders import BuildContext, build_variant, open_runner
from edgevision.reporting import Reporter
from edgevision.data import Selection, open_dataset
from edgevision.data.shapes import ShapesDataset, shapes_labels
from edgevision.errors import DataError, EdgeVisionError, RecipeError, VerificationFailed
from edgevision.ops.nms import NMSParams, nms_reference
from edgevision.recipe import Recipe, TargetSpec, load_recipe
from edgevision.runtime.predictor import Predictor
from edgevision.runtime.preprocess import InputSpec, preprocess
from edgevision.runtime.proposals import PROPOSALS, proposal_batch
from edgevision.staging import Staging, check_destination, is_artifact
from edgevision.tasks import DETECTION_TASKS, METRIC
from edgevision.verify.measure import evaluate_model, measure
from edgevision.verify.reference import reference as pytorch_reference

def _as_recipe(recipe: Union[Recipe, str, Path]) -> Recipe:
    return recipe if isinstance(recipe, Recipe) else load_recipe(recipe)


def train(recipe: Union[Recipe, str, Path], reporter: Optional[Reporter] = None) -> Path:
    """Train the recipe's model and write its checkpoint (model.checkpoint)."""
    from edgevision.train.loop import train as train_loop

    recipe, reporter = _as_recipe(recipe), reporter or Reporter()
    recipe = _with_labels(recipe)
    total = recipe.train.epochs * max(1, _count(recipe.data.train) // recipe.train.batch) if recipe.train and recipe.data.train else 1
    with reporter.task("training", total) as advance:
        return train_loop(recipe, log=reporter.info, progress=lambda step, n, loss: advance(1, f"loss {loss:.4f}"))


def benchmark(target: Union[str, Path], options: Any = None, reporter: Optional[Reporter] = None) -> dict[str, Any]:
    """Benchmark an artifact folder, or a recipe's artifact (compiled first when it is missing or was
    built from another version of the recipe); returns the report (bench/report.py)."""
    from edgevision.bench.run import benchmark_artifact

    reporter = reporter or Reporter()
    return benchmark_artifact(_artifact_for(Path(target), reporter), options, reporter)


def _artifact_for(target: Path, reporter: Reporter) -> Path:
    """An artifact folder as given, or a recipe's artifact: compiled first when it is missing or
    was built from a different recipe. A compile that fails still leaves <output>.failed, which
    is benchmarked so the failing variants show in the report."""
    target = Path(target)
    if target.is_dir():
        read_manifest(target)  # a clear error if this is not an artifact
        return target
    if not target.exists():
        raise RecipeError(f"{target}: neither an artifact folder nor a recipe file")
    recipe = load_recipe(target)
    out = recipe.output_dir
    try:
        current = read_manifest(out)["recipe"]["sha256"] == recipe.digest()
    except EdgeVisionError:
        current = False
    if current:
        reporter.info(f"benchmarking {out} (built from this recipe)")
        return out
    reporter.info(f"{out} is missing or was built from another version of {target}: compiling it first")
    try:
        compile(recipe, reporter=reporter)
    except VerificationFailed as e:
        failed = out.with_name(out.name + ".failed")
        reporter.info(f"compile failed ({e}); benchmarking {failed} so the failures are reported")
        return failed
    return out


def _count(source: Any) -> int:
    return source.count if source.count is not None else len(open_dataset(source, (64, 64)))


def resolve_labels(recipe: Recipe) -> list[str]:
    """The recipe's labels, else the data's categories, else class_0..class_{n-1}."""
    if recipe.model.labels:
        return list(recipe.model.labels)
    for source in (recipe.data.train, recipe.data.val):
        if source is None:
            continue
        if source.source == "shapes":
            return shapes_labels(recipe.task)
        cats = open_dataset(source, recipe.input.size).categories
        if cats:
            return ["background", *cats] if recipe.task == "segmentation" else list(cats)
    if recipe.model.num_classes:
        return [f"class_{i}" for i in range(recipe.model.num_classes)]
    raise RecipeError("model.labels: give the class names (or model.num_classes), or a data source that has them")


def _with_labels(recipe: Recipe) -> Recipe:
    labels = resolve_labels(recipe)
    return recipe.model_copy(update={"model": recipe.model.model_copy(update={"labels": labels, "num_classes": len(labels)})})


def _check_backends(recipe: Recipe) -> None:
    """Fail before any training or export if a target's backend package is missing."""
    for i, t in enumerate(recipe.targets):
        if t.backend not in BACKENDS:
            raise RecipeError(f"targets[{i}].backend: '{t.backend}' cannot be built by this version")
        info = BACKENDS[t.backend]
        if info.emulation_package is not None:  # verified on CPU by emulation; the engine is built where it runs
            helper = BACKENDS[info.emulation_package]
            require(helper.package, helper.name, helper.extra)
            continue
        require(info.package, t.backend, info.extra)


def _ensure_checkpoint(recipe: Recipe, reporter: Reporter) -> None:
    ckpt = recipe.model.checkpoint
    if ckpt is None or ckpt.is_file():
        if ckpt is not None:
            reporter.info(f"using checkpoint {ckpt} (delete it to retrain)")
        return
    if recipe.train is None:
        raise RecipeError(f"model.checkpoint: file not found: {ckpt} (add a 'train' section to train it first)")
    reporter.info(f"checkpoint {ckpt} does not exist yet: training it first (recipe 'train' section)")
    train(recipe, reporter)


def compile(recipe: Union[Recipe, str, Path], reporter: Optional[Reporter] = None, threads: Optional[int] = None) -> dict[str, Any]:  # noqa: A001
    """Build, verify and commit every target of a recipe. Returns the manifest.

    Raises VerificationFailed (after writing <output>.failed/) if any variant fails; the previous
    artifact at <output> is then left untouched.
    """
    import torch

    from edgevision.export.onnx_export import export_onnx

    recipe_path = None if isinstance(recipe, Recipe) else Path(recipe)
    recipe, reporter = _as_recipe(recipe), reporter or Reporter()
    failed_dir = _failed_dir(recipe, recipe_path)  # checked before any training: nothing of the user's is replaced
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    _check_backends(recipe)
    recipe = _with_labels(recipe)
    labels = list(recipe.model.labels or [])
    _ensure_checkpoint(recipe, reporter)
    wrapper, nms, reference = pytorch_reference(recipe)
    val = open_dataset(recipe.data.val, recipe.input.size) if recipe.data.val else None
    if val is not None:
        _check_label_space(recipe, val, labels)
    with Staging(recipe.output_dir) as stage, tempfile.TemporaryDirectory() as scratch:
        reporter.info(f"exporting {recipe.model.source} to ONNX ({recipe.export.exporter}, opset {recipe.export.opset})")
        pre_nms = Path(scratch) / "pre_nms.onnx" if wrapper.appends_nms else None
        export_info = export_onnx(wrapper, recipe, stage.path / "model.onnx", labels, nms, pre_nms)
        reporter.info(f"exported: {export_info['nodes']} nodes ({export_info['nodes_exported']} before cleanup) in {export_info['seconds']} s")
        info = _model_info(recipe, labels, INPUT_NAME, wrapper.contract_names)
        if nms is not None:
            info["nms"] = nms.to_dict()
        feeds, verified_on = _verification_feeds(recipe, val)
        ref_outputs = [reference.infer(f) for f in feeds]
        baseline_accuracy = evaluate_model(info, "pytorch-fp32", reference, val, reporter) if val is not None else None
        context = BuildContext(pre_nms=pre_nms, nms=nms, log=reporter.info,
                               **_quantization_context(recipe, info, val, baseline_accuracy, reporter, threads))
        runners: dict[str, Any] = {}  # one open runner per built variant, for parity, accuracy and timing
        try:
            variants = [_build_variant(t, stage.path, recipe, feeds, ref_outputs, reporter, threads, context, runners)
                        for t in recipe.targets]
            baseline = measure(recipe, info, reference, baseline_accuracy, variants, runners, val, reporter, threads)
        finally:
            for r in runners.values():
                r.close()
        manifest = _manifest(recipe, info, export_info, variants, baseline)
        manifest["verified_on"] = verified_on
        manifest["advice"] = advice_from_manifest(manifest, METRIC[recipe.task]).to_dict()
        for v in variants:
            public = json.loads(json.dumps({**info, **_variant_public(v)}))
            if "max_batch" in (v.get("settings") or {}):  # a variant that takes fewer images than the export
                public["input"]["max_batch"] = min(public["input"]["max_batch"], v["settings"]["max_batch"])
            write_json(stage.path / v["name"] / VARIANT, {**public, "sha256": content_digest(public)})
        manifest["files"] = file_entries(stage.path)
        write_json(stage.path / MANIFEST, manifest)
        failed = [v["name"] for v in variants if v["status"] != "passed"]
        if failed:
            where = stage.commit(failed_dir)
            raise VerificationFailed(
                f"{len(failed)} variant(s) failed: {', '.join(failed)}; the artifact was written to {where} for "
                f"inspection and {recipe.output_dir} was left as it was",
                manifest,
            )
        stage.commit()
    if is_artifact(failed_dir):  # an earlier failure is no longer the latest word
        shutil.rmtree(failed_dir, ignore_errors=True)
    return manifest


def _failed_dir(recipe: Recipe, recipe_path: Optional[Path]) -> Path:
    """Check that the artifact and its `.failed` sibling may be written where the recipe says
    (staging.check_destination); returns the `.failed` folder."""
    protected = [recipe_path] if recipe_path is not None else []
    output = check_destination(recipe.output_dir, protected)
    return check_destination(output.with_name(output.name + ".failed"), protected, field="output (its .failed sibling)")


def _check_label_space(recipe: Recipe, val: Any, labels: list[str]) -> None:
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


def _model_info(recipe: Recipe, labels: list[str], input_name: str, outputs: list[str]) -> dict[str, Any]:
    inp = recipe.input.model_dump(mode="json")
    inp.update(name=input_name, dtype="float32", max_batch=64 if recipe.export.dynamic_batch else 1)
    if recipe.export.proposals is not None:
        inp["proposals"] = recipe.export.proposals.max
    return {"schema_version": SCHEMA_VERSION, "task": recipe.task, "labels": labels, "input": inp, "outputs": outputs}


def _verification_feeds(recipe: Recipe, val: Any) -> tuple[list[dict[str, np.ndarray]], str]:
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
    spec = InputSpec.from_dict(recipe.input.model_dump())
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


def _build_variant(target: TargetSpec, root: Path, recipe: Recipe, feeds: list, ref_outputs: list,
                   reporter: Reporter, threads: int, context: BuildContext, runners: dict[str, Any]) -> dict[str, Any]:
    """Build one target, open its runner (kept in `runners`) and compare it with PyTorch."""
    from edgevision.verify.parity import compare, judge

    name = target.variant
    vdir = root / name
    vdir.mkdir()
    entry: dict[str, Any] = {"name": name, "backend": target.backend, "precision": target.precision, "device": target.device,
                             "options": target.options}
    reporter.info(f"building {name}")
    start = time.perf_counter()
    try:
        entry["settings"] = build_variant(target.backend, root / "model.onnx", vdir, target.precision, target.device,
                                          target.options, context)
        entry["build_seconds"] = round(time.perf_counter() - start, 2)
        entry["size_mb"] = round(sum(p.stat().st_size for p in vdir.iterdir()) / 1e6, 3)
        runner, note = open_runner(entry, vdir, threads)
        runners[name] = runner
        if note:
            entry["verified_with"] = note
        tolerance = recipe.verify.tolerance(target.precision, recipe.task)
        entry["parity"] = compare(recipe.task, ref_outputs, [runner.infer(f) for f in feeds], tolerance)
        if hasattr(runner, "execution_precision"):
            entry["execution_precision"] = runner.execution_precision
    except EdgeVisionError as e:
        entry.update(status="error", reasons=[str(e)])
        return entry
    reasons = judge(entry["parity"], tolerance)
    entry.update(status="passed" if not reasons else "failed", reasons=reasons)
    entry["files"] = file_entries(vdir)
    return entry


def _quantization_context(recipe: Recipe, info: dict[str, Any], val: Any, baseline: Optional[dict[str, Any]],
                          reporter: Reporter, threads: int) -> dict[str, Any]:
    """What int8 builds need: the calibration set (loaded once), the cache switch, and the accuracy
    probe when calibration.accuracy_control is on."""
    from edgevision.eval.metrics import evaluate
    from edgevision.quantize.accuracy import AccuracyProbe
    from edgevision.quantize.calibration import load_calibration

    spec = recipe.calibration_source
    if spec is None or not any(t.precision == "int8" for t in recipe.targets):
        return {}
    reporter.info(f"loading {spec.count} calibration images ({spec.source}{': ' + str(spec.path) if spec.path else ''})")
    calib = load_calibration(spec, InputSpec.from_dict(recipe.input.model_dump()), reporter.info)
    context: dict[str, Any] = {"calibration": calib, "cache": spec.cache}
    metric = METRIC[recipe.task]
    limit = getattr(recipe.verify.max_drop, metric)
    if spec.accuracy_control:
        if baseline is None or limit is None:
            raise RecipeError(f"calibration.accuracy_control: needs data.val and verify.max_drop.{metric}")
        context["accuracy"] = AccuracyProbe(
            metric, float(baseline[metric]), limit / 100.0, len(val),
            lambda runner, idx: evaluate(Predictor({**info, "name": "candidate"}, runner), val if idx is None else Selection(val, idx)),
            list(info["outputs"]), threads)
    return context


def _variant_public(v: dict[str, Any]) -> dict[str, Any]:
    keys = ("name", "backend", "precision", "device", "settings", "files", "status", "reasons", "parity", "accuracy",
            "accuracy_drop", "execution_precision", "verified_with")
    return {k: v[k] for k in keys if k in v}


def _manifest(recipe: Recipe, info: dict[str, Any], export_info: dict[str, Any], variants: list[dict[str, Any]],
              baseline: dict[str, Any]) -> dict[str, Any]:
    ckpt = recipe.model.checkpoint
    return {
        **info,
        "name": recipe.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": {"source": recipe.model.source, "kwargs": recipe.model.kwargs,
                  "checkpoint": str(ckpt) if ckpt else None, "checkpoint_sha256": sha256_file(ckpt) if ckpt else None},
        "export": export_info,
        "recipe": {"sha256": recipe.digest(), "content": recipe.model_dump(mode="json")},
        "tools": tool_versions(),
        "machine": {"platform": platform.platform(), "processor": cpu_name(), "cores": os.cpu_count()},
        "baseline": baseline,
        "variants": variants,
    }
