"""After the build: every variant's accuracy on data.val against PyTorch FP32 (and the accuracy
gate, verify.max_drop), and interleaved latency of all of them, baseline included. Returns new
variant records; the ones given are not changed."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from edgevision.data.shapes import ShapesDataset
from edgevision.recipe import Recipe
from edgevision.records import ModelInfo, VariantRecord
from edgevision.reporting import Reporter
from edgevision.runtime.predictor import Predictor
from edgevision.tasks import METRIC, METRIC_TITLE
from edgevision.verify.latency import interleaved, summarize
from edgevision.verify.reference import REFERENCE

if TYPE_CHECKING:
    from edgevision.steps import Job


def evaluate_model(predictor: Predictor, val: Any, reporter: Reporter) -> Dict[str, Any]:
    """The task metrics of one model on data.val, end to end through the runtime's Predictor."""
    from edgevision.eval.metrics import evaluate

    with reporter.task(f"evaluating {predictor.name} on {val.name}", len(val)) as advance:
        return evaluate(predictor, val, progress=advance)


def measure(job: "Job", info: ModelInfo, baseline_accuracy: Optional[Dict[str, Any]],
            variants: Sequence[VariantRecord], runners: Dict[str, Any]) -> Tuple[List[VariantRecord], Dict[str, Any]]:
    """Accuracy on the val split (and the accuracy gate), interleaved latency (engine and end to
    end), baseline included: (the variants' new records, the baseline's figures)."""
    predictors = {v.name: Predictor(info, runners[v.name], v) for v in variants if v.status != "error"}
    out = {v.name: v for v in variants}
    if job.val is not None:
        for name, predictor in predictors.items():
            accuracy = evaluate_model(predictor, job.val, job.reporter)
            out[name] = _gate(job.recipe, replace(out[name], accuracy=accuracy), baseline_accuracy)
    timed = {"pytorch": Predictor(info, job.reference, REFERENCE)}  # emulation timings mean nothing
    timed.update({n: p for n, p in predictors.items() if out[n].verified_with is None})
    latency = _time(job.recipe, timed, job.val, job.reporter, job.threads)
    records = [replace(out[v.name], latency=latency.get(v.name)) if v.name in predictors else out[v.name]
               for v in variants]
    return records, {"accuracy": baseline_accuracy, "latency": latency.get("pytorch"), "threads": job.threads}


def _gate(recipe: Recipe, variant: VariantRecord, baseline: Optional[Dict[str, Any]]) -> VariantRecord:
    """verify.max_drop: fail a variant that loses more than the limit against PyTorch FP32."""
    metric = METRIC[recipe.task]
    if baseline is None or variant.accuracy is None:
        return variant
    drop = round(100.0 * (baseline[metric] - variant.accuracy[metric]), 3)
    variant = replace(variant, accuracy_drop=drop)
    limit = getattr(recipe.verify.max_drop, metric)
    if limit is None or drop <= limit:
        return variant
    reason = (f"accuracy gate: {METRIC_TITLE[recipe.task]} {variant.accuracy[metric]:.4f} is {drop:.2f} points below "
              f"PyTorch FP32 {baseline[metric]:.4f} (verify.max_drop.{metric}: {limit})")
    return replace(variant, status="failed", reasons=variant.reasons + (reason,))


def _time(recipe: Recipe, predictors: Dict[str, Predictor], val: Any, reporter: Reporter, threads: int) -> Dict[str, Any]:
    """Interleaved p50/p90/p99 per model: engine only (`infer`) and end to end (`e2e`, pre + post)."""
    rounds = recipe.verify.timing_rounds
    if rounds == 0:
        return {}
    sample = val[0].image if val is not None else ShapesDataset(1, seed=9999, size=recipe.input.size)[0].image
    feed = predictors["pytorch"].feeds([sample])[0]
    reporter.info(f"timing {len(predictors)} models: {rounds} interleaved rounds, batch 1, {threads} threads")
    infer = interleaved({n: (lambda p=p: p.runner.infer(feed)) for n, p in predictors.items()}, rounds)
    e2e = interleaved({n: (lambda p=p: p.predict(sample)) for n, p in predictors.items()}, rounds)
    return {n: {"infer": summarize(infer[n]), "e2e": summarize(e2e[n])} for n in predictors}
