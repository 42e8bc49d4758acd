"""compile(recipe) -> artifact directory; train(recipe) -> checkpoint.

The flow (steps.py): recipe -> model -> export -> build per target -> verify against PyTorch
(parity and accuracy) -> artifact directory, committed atomically. Nothing here prints directly;
progress goes through a Reporter.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

from edgevision import steps
from edgevision.artifact import is_artifact, read_manifest
from edgevision.backends.base import BACKENDS, require
from edgevision.data import open_dataset
from edgevision.data.shapes import shapes_labels
from edgevision.errors import EdgeVisionError, RecipeError, VerificationFailed
from edgevision.recipe import Recipe, load_recipe
from edgevision.reporting import Reporter
from edgevision.staging import Staging, check_destination
from edgevision.verify.measure import measure


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
    if is_current(recipe):
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


def is_current(recipe: Recipe) -> bool:
    """Whether recipe.output_dir holds an artifact compiled from this recipe. The manifest records
    the recipe as compiled, labels resolved (num_classes filled in from them), so the comparison
    resolves them too: compared as written, every recipe without num_classes looked changed and
    `edgevision benchmark recipe.yaml` recompiled it every time."""
    try:
        return read_manifest(recipe.output_dir).recipe["sha256"] == _with_labels(recipe).digest()
    except EdgeVisionError:
        return False


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
    """Build, verify and commit every target of a recipe (the steps in steps.py). Returns the
    manifest, as written to manifest.json.

    Raises VerificationFailed (after writing <output>.failed/) if any variant fails; the previous
    artifact at <output> is then left untouched.
    """
    import torch

    recipe_path = None if isinstance(recipe, Recipe) else Path(recipe)
    recipe, reporter = _as_recipe(recipe), reporter or Reporter()
    failed_dir = _failed_dir(recipe, recipe_path)  # checked before any training: nothing of the user's is replaced
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    _check_backends(recipe)
    recipe = _with_labels(recipe)
    _ensure_checkpoint(recipe, reporter)
    job = steps.prepare(recipe, reporter, threads)
    with Staging(recipe.output_dir) as stage, tempfile.TemporaryDirectory() as scratch:
        exported = steps.export(job, stage.path, Path(scratch))
        checks = steps.prepare_checks(job, exported)
        runners: dict[str, Any] = {}  # one open runner per built variant, for parity, accuracy and timing
        try:
            variants = []
            for target in recipe.targets:
                record, runner = steps.build(job, exported, checks, target)
                variants.append(record)
                if runner is not None:
                    runners[record.name] = runner
            variants, baseline = measure(job, exported.info, checks.baseline_accuracy, variants, runners)
        finally:
            for r in runners.values():
                r.close()
        manifest = steps.write(job, exported, checks, variants, baseline).to_json()
        failed = [v.name for v in variants if v.status != "passed"]
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
