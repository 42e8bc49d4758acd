"""After the build: every variant's accuracy on data.val against PyTorch FP32 (and the accuracy
gate, verify.max_drop), and interleaved latency of all of them, baseline included."""

from __future__ import annotations

from typing import Any, Optional

from edgevision.verify.latency import interleaved, summarize
from edgevision.reporting import Reporter
from edgevision.tasks import METRIC, METRIC_TITLE
from edgevision.data.shapes import ShapesDataset
from edgevision.recipe import Recipe
from edgevision.runtime.predictor import Predictor


def evaluate_model(info: dict[str, Any], name: str, runner: Any, val: Any, reporter: Reporter) -> dict[str, Any]:
    """The task metrics of one model on data.val, end to end through the runtime's Predictor."""
    from edgevision.eval.metrics import evaluate

    with reporter.task(f"evaluating {name} on {val.name}", len(val)) as advance:
        return evaluate(Predictor({**info, "name": name}, runner), val, progress=advance)


def measure(recipe: Recipe, info: dict[str, Any], reference: Any, baseline_accuracy: Optional[dict[str, Any]],
             variants: list[dict[str, Any]], runners: dict[str, Any], val: Any, reporter: Reporter,
             threads: int) -> dict[str, Any]:
    """Accuracy on the val split (and the accuracy gate), interleaved latency (engine and end to
    end), baseline included."""
    ok = [v for v in variants if v["status"] != "error"]
    predictors = {"pytorch": Predictor({**info, "name": "pytorch-fp32"}, reference)}
    predictors.update({v["name"]: Predictor({**info, "name": v["name"]}, runners[v["name"]]) for v in ok})
    if val is not None:
        for v in ok:
            v["accuracy"] = evaluate_model(info, v["name"], runners[v["name"]], val, reporter)
            _gate(recipe, v, baseline_accuracy)
    emulated = {v["name"] for v in ok if "verified_with" in v}  # emulation timings mean nothing
    latency = _time(recipe, {n: p for n, p in predictors.items() if n not in emulated}, val, reporter, threads)
    for v in ok:
        v["latency"] = latency.get(v["name"])
    return {"accuracy": baseline_accuracy, "latency": latency.get("pytorch"), "threads": threads}


def _gate(recipe: Recipe, variant: dict[str, Any], baseline: Optional[dict[str, Any]]) -> None:
    """verify.max_drop: fail a variant that loses more than the limit against PyTorch FP32."""
    metric = METRIC[recipe.task]
    if baseline is None or variant.get("accuracy") is None:
        return
    drop = round(100.0 * (baseline[metric] - variant["accuracy"][metric]), 3)
    variant["accuracy_drop"] = drop
    limit = getattr(recipe.verify.max_drop, metric)
    if limit is not None and drop > limit:
        variant["status"] = "failed"
        variant.setdefault("reasons", []).append(
            f"accuracy gate: {METRIC_TITLE[recipe.task]} {variant['accuracy'][metric]:.4f} is {drop:.2f} points below "
            f"PyTorch FP32 {baseline[metric]:.4f} (verify.max_drop.{metric}: {limit})")


def _time(recipe: Recipe, predictors: dict[str, Predictor], val: Any, reporter: Reporter, threads: int) -> dict[str, Any]:
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
