"""`edgevision benchmark`: every variant of an artifact and its PyTorch FP32 baseline, measured
side by side in one process under the same thread count.

Per model: accuracy on the recipe's data.val; latency engine-only and end to end (JPEG file
decoded -> pre-processing -> inference -> post-processing), interleaved A B C A B C so machine
drift falls on every model alike; synchronous throughput at each batch size; asynchronous
throughput where the backend has it (OpenVINO); peak RSS in a process of its own; size and build
time from the manifest. The result is a dict that follows bench/report.py's schema.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from edgevision.artifact import inside, read_manifest, read_variant, verify_files
from edgevision.records import Manifest
from edgevision.bench.advice import from_report
from edgevision.verify.latency import interleaved, summarize
from edgevision.bench.machine import machine
from edgevision.bench.memory import BASELINE, measure_in_subprocess
from edgevision.benchmark_options import BENCH_OPTIONS, QUICK, STEADY_BLOCK, flag
from edgevision.reporting import Reporter
from edgevision.tasks import METRIC
from edgevision.errors import BackendNotInstalled, EdgeVisionError, RecipeError

MEMORY_ITERATIONS = 10
ACCURACY_KEYS = ("images", "map", "map50", "mask_map", "miou", "top1", "top5")


@dataclass(frozen=True)
class BenchOptions:
    """What one run asks for: overrides of the recipe's `benchmark` section (the names in
    benchmark_options.BENCH_OPTIONS; None: the recipe's value, or --quick's), the variants to run
    and the threads."""

    overrides: Mapping[str, Any] = field(default_factory=dict)
    quick: bool = False
    threads: Optional[int] = None
    variants: Optional[List[str]] = None


@dataclass
class _Model:
    """One row of the report while it is being measured."""

    row: Dict[str, Any]
    predictor: Any = None
    timed: bool = True


def settings_for(manifest: Manifest, options: BenchOptions) -> Dict[str, Any]:
    """The recipe's benchmark section, then --quick, then the options asked for, checked against
    the section's limits (recipe.BenchmarkSpec)."""
    from pydantic import ValidationError

    from edgevision.recipe import BenchmarkSpec

    asked = {k: v for k, v in options.overrides.items() if v is not None}
    unknown = sorted(set(asked) - set(BENCH_OPTIONS))
    if unknown:
        raise RecipeError(f"benchmark option {unknown[0]!r} does not exist (options: {', '.join(BENCH_OPTIONS)})")
    merged = {**(manifest.recipe["content"].get("benchmark") or {}), **(QUICK if options.quick else {}), **asked}
    try:
        s: Dict[str, Any] = BenchmarkSpec(**merged).model_dump()
    except ValidationError as e:
        first = e.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "benchmark"
        raise RecipeError(f"{flag(name)} {merged.get(name)!r}: {first['msg']}") from None
    if s["duration"] is not None and "iterations" not in asked:
        s["iterations"] = None  # a duration replaces the recipe's round count unless both were asked for
    if max(s["batch_sizes"]) > 1 and not manifest.recipe["content"]["export"]["dynamic_batch"]:
        raise RecipeError(f"--batch {s['batch_sizes']}: this artifact was exported for batch 1 (export.dynamic_batch: false)")
    s["quick"] = options.quick
    s["threads"] = options.threads or os.cpu_count() or 1
    return s


def benchmark_artifact(artifact: Path, options: Optional[BenchOptions] = None,
                       reporter: Optional[Reporter] = None) -> Dict[str, Any]:
    """Measure an artifact; return the report (see bench/report.py). api.benchmark also takes a
    recipe, compiled first when needed."""
    options, reporter = options or BenchOptions(), reporter or Reporter()
    started = time.perf_counter()
    manifest = read_manifest(artifact)
    s = settings_for(manifest, options)
    models = _open_models(artifact, manifest, s, options.variants, reporter)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            val = _val_dataset(manifest)
            image = _sample_image(manifest, val, Path(tmp))
            notes = _accuracy(manifest, val, models, s, reporter) if s["accuracy"] else ["accuracy not measured (--no-accuracy)"]
            _latency(manifest, models, image, s, reporter)
            _throughput(manifest, models, image, s, reporter)
            if s["memory"]:
                _memory(artifact, models, image, s, reporter)
    finally:
        for m in models:
            if m.predictor is not None:
                m.predictor.close()
    return _report(artifact, manifest, models, s, notes, time.perf_counter() - started)


def _open_models(artifact: Path, manifest: Manifest, s: Dict[str, Any], names: Optional[List[str]],
                 reporter: Reporter) -> List[_Model]:
    from edgevision.builders import open_runner
    from edgevision.runtime.predictor import Predictor
    from edgevision.verify.reference import reference_predictor

    known = manifest.names
    unknown = [n for n in (names or []) if n not in known]
    if unknown:
        raise RecipeError(f"--variants: {artifact} has no variant {unknown[0]!r} (variants: {', '.join(known)})")
    base = _Model({"name": BASELINE, "backend": "torch", "precision": "fp32", "device": "cpu", "baseline": True,
                   "status": "reference", "reasons": [], "notes": []})
    try:
        base.predictor = reference_predictor(manifest, s["threads"])
    except (EdgeVisionError, ImportError) as e:
        base.row.update(status="skipped", reasons=[f"PyTorch baseline not available: {e}"])
    models = [base]
    for v in manifest.variants:
        if names and v.name not in names:
            continue
        row = {"name": v.name, "backend": v.backend, "precision": v.precision, "device": v.device,
               "baseline": False, "status": v.status, "reasons": list(v.reasons), "notes": [],
               "size_mb": v.size_mb, "compile_seconds": v.build_seconds}
        model = _Model(row)
        models.append(model)
        if v.status == "error":  # nothing was built
            continue
        try:
            vdir = inside(artifact, v.name, "variant")
            found = read_variant(vdir)
            verify_files(vdir, found.variant.files or {})
            runner, note = open_runner(found.variant, vdir, s["threads"])
        except BackendNotInstalled as e:
            row.update(status="skipped", reasons=row["reasons"] + [str(e)])
            continue
        except EdgeVisionError as e:
            row.update(status="error", reasons=row["reasons"] + [f"cannot open on this machine: {e}"])
            continue
        if note:
            row["notes"].append(f"{note}: accuracy only, not timed")
            model.timed = False
        model.predictor = Predictor(found.info, runner, found.variant, path=vdir)
    reporter.info(f"benchmarking {sum(m.predictor is not None for m in models)} models of {artifact} with {s['threads']} threads")
    return models


def _sample_image(manifest: Manifest, val: Any, tmp: Path) -> Path:
    """The end-to-end input: the first data.val image (or a generated one) as a JPEG file, so
    decoding is part of the end-to-end time, as in a camera application reading frames."""
    from PIL import Image

    if val is not None and len(val) > 0:
        pixels = val[0].image
    else:
        from edgevision.data.shapes import ShapesDataset

        pixels = ShapesDataset(1, seed=9999, size=manifest.info.input.size)[0].image
    path = tmp / "sample.jpg"
    Image.fromarray(pixels).save(path, quality=95)
    return path


def _val_dataset(manifest: Manifest) -> Any:
    from edgevision.data import open_dataset
    from edgevision.recipe_sections import DataSource

    val = (manifest.recipe["content"].get("data") or {}).get("val")
    if not val:
        return None
    return open_dataset(DataSource(**val), manifest.info.input.size)


def _accuracy(manifest: Manifest, val: Any, models: List[_Model], s: Dict[str, Any], reporter: Reporter) -> List[str]:
    """Task metrics of every open model on data.val (or its first accuracy_images); returns notes
    for the whole report."""
    from edgevision.data import Selection
    from edgevision.eval.metrics import evaluate

    if val is None:
        return ["accuracy not measured: the recipe has no data.val"]
    if s["accuracy_images"] is not None and s["accuracy_images"] < len(val):
        val = Selection(val, list(range(s["accuracy_images"])))
    metric = METRIC[manifest.info.task]
    for m in models:
        if m.predictor is None:
            continue
        with reporter.task(f"accuracy {m.row['name']}", len(val)) as advance:
            try:
                result = evaluate(m.predictor, val, progress=advance)
            except EdgeVisionError as e:
                m.row.update(status="error", reasons=m.row["reasons"] + [f"evaluation failed: {e}"])
                continue
        m.row["accuracy"] = {k: (round(float(result[k]), 5) if k != "images" else int(result[k]))
                             for k in ACCURACY_KEYS if result.get(k) is not None}
    base = models[0].row.get("accuracy")
    for m in models[1:]:
        if base and m.row.get("accuracy"):
            m.row["accuracy_drop"] = round(100.0 * (base[metric] - m.row["accuracy"][metric]), 3)
    return []


def _timed(models: List[_Model]) -> Dict[str, _Model]:
    return {m.row["name"]: m for m in models if m.predictor is not None and m.timed and m.row["status"] != "error"}


def _rounds(s: Dict[str, Any], divisor: int = 1) -> Dict[str, Any]:
    iterations = s["iterations"]
    return {"rounds": max(5, iterations // divisor) if iterations else None,
            "duration": s["duration"] / divisor if s["duration"] else None, "warmup": s["warmup"]}


def _latency(manifest: Manifest, models: List[_Model], image: Path, s: Dict[str, Any], reporter: Reporter) -> None:

    timed = _timed(models)
    if not timed:
        return
    feed = next(iter(timed.values())).predictor.feeds([_decode(image)])[0]
    r = _rounds(s)
    rounds = -(-r["rounds"] // (STEADY_BLOCK - 1)) if r["rounds"] else None  # iterations = timed calls per model
    samples = {}
    for kind, make in (("infer", lambda p: (lambda: p.runner.infer(feed))), ("e2e", lambda p: (lambda: p.predict(str(image))))):
        with reporter.task(f"latency {kind}: {len(timed)} models interleaved", rounds or 0) as advance:
            ms = interleaved({n: make(m.predictor) for n, m in timed.items()}, rounds, r["warmup"], r["duration"],
                             progress=advance, block=STEADY_BLOCK)
            samples[kind] = {n: t[:r["rounds"]] if r["rounds"] else t for n, t in ms.items()}
    base = timed.get(BASELINE)
    for name, m in timed.items():
        m.row["latency"] = {k: summarize(samples[k][name]) for k in samples}
        m.row["latency"].update({f"{k}_samples_ms": [round(float(x), 4) for x in samples[k][name]] for k in samples})
        if base is not None:
            m.row["speedup"] = {k: round(base.row["latency"][k]["p50"] / m.row["latency"][k]["p50"], 3) for k in samples}


def _decode(image: Path) -> Any:
    from edgevision.runtime.images import to_rgb

    return to_rgb(str(image))


def _throughput(manifest: Manifest, models: List[_Model], image: Path, s: Dict[str, Any], reporter: Reporter) -> None:
    """Synchronous images/s at each batch size (engine only, one request at a time), and
    asynchronous images/s with many requests in flight where the backend supports it."""

    timed = _timed(models)
    pixels = _decode(image)
    for m in timed.values():
        m.row["throughput"] = []
        lat = m.row.get("latency")
        if lat and 1 in s["batch_sizes"]:
            m.row["throughput"].append({"mode": "sync", "batch": 1, "fps": round(1000.0 / lat["infer"]["mean"], 2),
                                        "requests": 1})
    for batch in [b for b in s["batch_sizes"] if b > 1]:
        able = {n: m for n, m in timed.items() if m.predictor.max_batch >= batch}
        feed = next(iter(timed.values())).predictor.feeds([pixels] * batch)[0]
        r = _rounds(s, 4)
        with reporter.task(f"throughput: batch {batch}, {len(able)} models interleaved", r["rounds"] or 0) as advance:
            ms = interleaved({n: (lambda p=m.predictor: p.runner.infer(feed)) for n, m in able.items()}, r["rounds"],
                             r["warmup"], r["duration"], progress=advance)
        for n, m in able.items():
            m.row["throughput"].append({"mode": "sync", "batch": batch, "fps": round(1000.0 * batch / float(ms[n].mean()), 2),
                                        "requests": 1})
    if s["async_seconds"] > 0:
        feed = next(iter(timed.values())).predictor.feeds([pixels])[0]
        for m in timed.values():
            run_async = getattr(m.predictor.runner, "async_throughput", None)
            if run_async is None:
                continue
            reporter.info(f"async throughput {m.row['name']}: {s['async_seconds']:g} s")
            try:
                result = run_async(feed, s["async_seconds"])
            except Exception as e:  # a backend that cannot compile a THROUGHPUT model here: say so, keep going
                m.row["notes"].append(f"async throughput failed: {e}")
                continue
            m.row["throughput"].append({"mode": "async", "batch": result.pop("batch"), "fps": result.pop("fps"),
                                        "requests": result.pop("requests"), "detail": result})


def _memory(artifact: Path, models: List[_Model], image: Path, s: Dict[str, Any], reporter: Reporter) -> None:
    timed = _timed(models)
    with reporter.task("peak memory: one process per model", len(timed)) as advance:
        for name, m in timed.items():
            try:
                m.row["memory"] = measure_in_subprocess(artifact, name, image, s["threads"], MEMORY_ITERATIONS)
            except (RuntimeError, OSError, ValueError) as e:
                m.row["notes"].append(f"peak memory not measured: {e}")
            advance(1)


def _report(artifact: Path, manifest: Manifest, models: List[_Model], s: Dict[str, Any], notes: List[str],
            seconds: float) -> Dict[str, Any]:
    from edgevision.version import __version__

    settings = {k: s[k] for k in (*BENCH_OPTIONS, "quick", "threads")}
    settings["e2e_input"] = "one JPEG file: decode, pre-process, infer, post-process (Predictor.predict(path))"
    report = {
        "schema_version": 1,
        "kind": "edgevision.benchmark",
        "edgevision": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(seconds, 1),
        "artifact": {
            "path": str(artifact), "name": manifest.name, "task": manifest.info.task,
            "input_size": list(manifest.info.input.size), "metric": METRIC[manifest.info.task],
            "compiled": manifest.created or None, "recipe_sha256": manifest.recipe["sha256"],
            "export_seconds": manifest.export.get("seconds"),
        },
        "machine": machine(s["threads"]),
        "settings": settings,
        "notes": notes,
        "variants": [m.row for m in models],
    }
    report["advice"] = from_report(report).to_dict()
    return report
