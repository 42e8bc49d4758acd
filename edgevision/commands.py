"""The `edgevision` commands, one function each (typer): parse arguments, call the API, print.
Imported by cli.main only, so a missing 'cli' extra gets a clear message instead of a traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from edgevision.benchmark_options import QUICK, flag, help_text
from edgevision.commands_serve import export, serve
from edgevision.runtime.images import MAX_PIXELS
from edgevision.tasks import DETECTION_TASKS

state = {"debug": False}

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Compile PyTorch vision models to verified ONNX Runtime / OpenVINO artifacts, and run them.",
)

@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    state["debug"] = debug

@app.command()
def compile(  # noqa: A001
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for every backend (default: all cores)."),
) -> None:
    """Train (if needed), export, build every target, verify against PyTorch, write the artifact."""
    from edgevision import api
    from edgevision.console import RichReporter, print_summary
    from edgevision.errors import VerificationFailed
    from edgevision.records import Manifest

    try:
        manifest = Manifest.from_json(api.compile(recipe, reporter=RichReporter(), threads=threads))
    except VerificationFailed as e:
        print_summary(Manifest.from_json(e.manifest))
        raise
    print_summary(manifest)
    out = manifest.recipe["content"]["output"] or f"build/{manifest.name}"
    print(f"artifact: {out}")

@app.command()
def benchmark(
    target: Path = typer.Argument(..., help="Artifact folder, or a recipe (compiled first if its artifact is "
                                  "missing or stale)."),
    quick: bool = typer.Option(False, "--quick", help="Short run: " + ", ".join(
                                   f"{flag(k)} {','.join(map(str, v)) if isinstance(v, list) else v}"
                                   for k, v in QUICK.items()) + "."),
    iterations: Optional[int] = typer.Option(None, help=help_text("iterations")),
    duration: Optional[float] = typer.Option(None, help=help_text("duration")),
    warmup: Optional[int] = typer.Option(None, help=help_text("warmup")),
    batch: Optional[str] = typer.Option(None, help=help_text("batch_sizes") + " Comma-separated, e.g. 1,8."),
    async_seconds: Optional[float] = typer.Option(None, "--async-seconds", help=help_text("async_seconds")),
    accuracy: Optional[bool] = typer.Option(None, "--accuracy/--no-accuracy", help=help_text("accuracy")),
    memory: Optional[bool] = typer.Option(None, "--memory/--no-memory", help=help_text("memory")),
    accuracy_images: Optional[int] = typer.Option(None, "--accuracy-images", help=help_text("accuracy_images")),
    variants: Optional[str] = typer.Option(None, help="Only these variants, comma-separated (the baseline always runs)."),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads for every model (default: all cores)."),
    out: Optional[Path] = typer.Option(None, help="Folder for report.json/.md/.html (default: the artifact folder)."),
) -> None:
    """Measure every variant against PyTorch FP32: accuracy, latency, throughput, memory; write reports."""
    from edgevision.bench.report import write_reports
    from edgevision.api import benchmark as run_benchmark
    from edgevision.bench.run import BenchOptions
    from edgevision.console import RichReporter, print_report
    from edgevision.errors import RecipeError

    try:
        sizes = [int(b) for b in batch.split(",")] if batch else None
    except ValueError:
        raise RecipeError(f"--batch {batch!r}: give batch sizes as integers separated by commas, e.g. 1,8") from None
    overrides = dict(iterations=iterations, duration=duration, warmup=warmup, batch_sizes=sizes,
                     async_seconds=async_seconds, accuracy=accuracy, memory=memory, accuracy_images=accuracy_images)
    options = BenchOptions(overrides, quick=quick, threads=threads, variants=variants.split(",") if variants else None)
    report = run_benchmark(target, options, RichReporter())
    paths = write_reports(report, out or Path(report["artifact"]["path"]))
    print_report(report)
    print("reports: " + ", ".join(str(p) for p in paths))

@app.command()
def train(recipe: Path = typer.Argument(..., help="Recipe YAML file with a 'train' section.")) -> None:
    """Train the recipe's model on its data.train source and write model.checkpoint."""
    from edgevision import api
    from edgevision.console import RichReporter

    api.train(recipe, reporter=RichReporter())

@app.command()
def predict(
    artifact: str = typer.Argument(..., help="Variant folder, artifact folder (with --variant), or a served model "
                                   "(grpc://HOST:8001/MODEL, http://HOST:8000/MODEL)."),
    images: List[Path] = typer.Argument(..., help="Image files."),
    variant: Optional[str] = typer.Option(None, help="Variant name inside an artifact folder."),
    top_k: int = typer.Option(5, help="Classification: classes to show."),
    min_score: Optional[float] = typer.Option(None, "--min-score", help="Detections: keep scores >= this."),
    classes: Optional[str] = typer.Option(None, help="Detections: keep these classes (names or ids, comma-separated)."),
    save: Optional[Path] = typer.Option(None, help="Write overlay images (NAME.overlay.png) into this folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="With --save: replace overlays edgevision wrote before."),
    max_pixels: int = typer.Option(MAX_PIXELS, "--max-pixels", min=1, help="Refuse images larger than this many "
                                   "pixels (decoding one costs 3 bytes a pixel)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per image."),
) -> None:
    """Run a built artifact on images (no PyTorch needed). Images are read one at a time; an unreadable
    one gets a line on stderr and the others are still predicted (exit 1 at the end if any failed)."""
    from edgevision.errors import InputError

    picked = _classes(classes)
    with _open(artifact, variant) as model:
        if (min_score is not None or picked is not None) and model.task not in DETECTION_TASKS:
            raise InputError(f"--min-score and --classes apply to detections; {model.name} is {model.task}")
        failed = 0
        for path in images:
            try:
                result = model.predict(str(path), top_k=top_k, max_pixels=max_pixels)
                if min_score is not None or picked is not None:
                    result = result.filter(min_score=min_score, classes=picked)
                overlay = _save_overlay(path, result, save, overwrite, max_pixels) if save is not None else None
            except InputError as e:
                failed += 1
                print(f"error: {e}", file=sys.stderr)
                continue
            print(json.dumps({"image": str(path), **result.to_dict()}) if as_json else f"{path}: {result}")
            if overlay is not None:
                print(f"  overlay: {overlay}")
    if failed:
        raise InputError(f"{failed} of {len(images)} image(s) could not be predicted (see above)")


def _save_overlay(path: Path, result: object, folder: Path, overwrite: bool, max_pixels: int) -> Path:
    from edgevision.runtime.annotate import save_overlay
    from edgevision.runtime.images import read_image
    from edgevision.runtime.outputs import check_outputs, mark_written, write_error

    target = folder / (path.stem + ".overlay.png")
    check_outputs({"--save": [target]}, [path], overwrite, new_folder=True)  # before the folder is made
    folder.mkdir(parents=True, exist_ok=True)
    try:
        save_overlay(read_image(path, max_pixels), result, target)  # type: ignore[arg-type]
    except OSError as e:
        raise write_error("--save", target, e) from None
    mark_written(target)
    return target

@app.command()
def run(
    artifact: str = typer.Argument(..., help="Variant folder, artifact folder (with --variant), or a served model "
                                   "(grpc://HOST:8001/MODEL, http://HOST:8000/MODEL)."),
    source: List[str] = typer.Option(..., "--source", "-s", help="Video file, image folder (name order), camera "
                                     "index, URL (rtsp://, http://) or GStreamer pipeline; repeat for several."),
    variant: Optional[str] = typer.Option(None, help="Variant name inside an artifact folder."),
    save: Optional[Path] = typer.Option(None, help="Annotated video (.mp4/.avi/.mkv/.mov); name-N.mp4 per source "
                                        "for several."),
    jsonl: Optional[Path] = typer.Option(None, help="JSON Lines: one line per frame (results in original pixels, "
                                         "COCO-style), then one with the statistics."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --save / --jsonl files that edgevision wrote "
                                   "before (never anyone else's: they are marked, README 'Outputs')."),
    show: bool = typer.Option(False, "--show", help="Show the annotated frames in a window ('q' stops)."),
    drop: str = typer.Option("oldest", help="Live sources, when inference falls behind: drop the oldest buffered "
                             "frame, the newest, or none (wait). Files never drop."),
    buffer: int = typer.Option(4, min=1, help="Frames buffered per source."),
    in_flight: int = typer.Option(2, "--in-flight", min=1, help="Frames in the engine at once."),
    track: bool = typer.Option(False, "--track", help="Tracking IDs for detections (ByteTrack; edgevision[track])."),
    min_score: Optional[float] = typer.Option(None, "--min-score", help="Detections: keep scores >= this."),
    classes: Optional[str] = typer.Option(None, help="Detections: keep these classes (names or ids, comma-separated)."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, help="Stop after this many frames per source."),
    fps: float = typer.Option(30.0, min=0.1, help="Frame rate for image folders and sources that report none."),
    reconnect: int = typer.Option(5, min=0, help="Live sources: reconnect attempts before giving up."),
    timeout: float = typer.Option(10.0, min=0.1, help="Live sources: seconds to wait for a frame or a connection."),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads for the engine in all, split between the "
                                          "frames in flight (default: all cores)."),
) -> None:
    """Run a built artifact on video files, cameras, streams or image folders (no PyTorch needed)."""
    from edgevision.runtime.video import run as run_stream

    picked = _classes(classes)
    _quiet_opencv()
    with _open(artifact, variant, threads=threads, streams=in_flight) as model:
        stats = run_stream(model, list(source), save=save, jsonl=jsonl, overwrite=overwrite, show=show, drop=drop, buffer=buffer,
                           in_flight=in_flight, track=track, min_score=min_score, classes=picked,
                           max_frames=max_frames, fps=fps, reconnect=reconnect, timeout=timeout,
                           on_event=lambda message: print(message, file=sys.stderr))
    _print_stream_stats(stats)
    if stats["interrupted"]:
        raise typer.Exit(143 if stats["signal"] == "SIGTERM" else 130)
    unreadable = sum(s["unreadable"] for s in stats["sources"])
    if unreadable:  # every readable image was run; the exit says that some were not
        from edgevision.errors import SourceError

        raise SourceError(f"{unreadable} image file(s) could not be read and were skipped (see above)")

app.add_typer(export, name="export")
app.command("serve")(serve)

calibration = typer.Typer(no_args_is_help=True, help="Calibration sets for INT8 (calibration/README.md).")
app.add_typer(calibration, name="calibration")

@calibration.command("make")
def calibration_make(
    out: Path = typer.Argument(..., help="Folder to create (then: calibration: {source: folder, path: OUT})."),
    source: str = typer.Option(..., "--from", help="A COCO annotation .json, a folder of images (e.g. camera "
                               "frames, searched recursively), or 'shapes'."),
    count: int = typer.Option(300, min=1, help="Images to sample."),
    seed: int = typer.Option(0, help="Sampling seed (shapes: generator seed)."),
    size: int = typer.Option(320, min=16, help="shapes: image size in pixels."),
    images: Optional[Path] = typer.Option(None, help="COCO: image folder (default: images/ next to the json)."),
    force: bool = typer.Option(False, help="Replace OUT if it exists."),
) -> None:
    """Sample a calibration set into a folder (images copied unchanged, plus calibration.json)."""
    from edgevision.quantize.calibration import make_calibration_set

    info = make_calibration_set(out, source, count, seed=seed, size=size, images=images, force=force)
    print(f"{out}: {info['images']} images from {info['source']} (skipped {info['skipped']} unreadable)")

@app.command("random-checkpoint")
def random_checkpoint(
    recipe: Path = typer.Argument(..., help="Recipe YAML file (its model, input and export sections are used)."),
    out: Path = typer.Argument(..., help="Checkpoint file to write (then: model.checkpoint: OUT)."),
    images: int = typer.Option(16, min=1, max=1000, help="Generated shapes images to re-estimate BatchNorm on."),
    force: bool = typer.Option(False, help="Replace OUT if it exists."),
) -> None:
    """Random weights, BatchNorm re-estimated: measure an architecture before it is trained.

    Speed and parity are real; accuracy is meaningless. (Plain random weights leave BatchNorm at
    mean 0 / var 1: features collapse and every score ties.)"""
    from edgevision.errors import RecipeError
    from edgevision.random_weights import reestimated_checkpoint
    from edgevision.recipe import load_recipe

    if out.exists() and not force:
        raise RecipeError(f"{out} exists; pass --force to replace it")
    data = load_recipe(recipe).model_dump(mode="json")
    changes: list[str] = []
    path = reestimated_checkpoint(data, out, images, log=changes.append)
    print(f"{path}: {data['model']['source']} with random weights, BatchNorm re-estimated on {images} shapes images")
    for line in changes:
        print(f"  changed: {line}")

@app.command()
def inspect(artifact: Path = typer.Argument(..., help="Artifact folder.")) -> None:
    """Check every file's sha256 and print the artifact's summary."""
    from edgevision.artifact import audit_artifact, read_manifest
    from edgevision.console import print_summary
    from edgevision.errors import ArtifactError

    problems, notes = audit_artifact(artifact)
    if problems:
        raise ArtifactError(f"{artifact}: {len(problems)} problem(s): " + "; ".join(problems)
                            + ". Rebuild the artifact with `edgevision compile`.")
    manifest = read_manifest(artifact)
    print_summary(manifest)
    tools = ", ".join(f"{k} {v}" for k, v in manifest.tools.items() if v)
    print(f"created {manifest.created}; recipe sha256 {manifest.recipe['sha256'][:12]}; {tools}")
    print(f"all {len(manifest.files)} files match their sha256; every variant.json checked; no extra files or links")
    for note in notes:
        print(f"note: {note}")

@app.command()
def schema(
    out: Optional[Path] = typer.Option(None, help="Write to a file instead of stdout."),
    report: bool = typer.Option(False, "--report", help="The schema of the benchmark's report.json instead."),
) -> None:
    """Print the recipe JSON Schema (for editor completion and validation), or report.json's."""
    if report:
        from edgevision.bench.schema import json_schema
    else:
        from edgevision.recipe import json_schema

    text = json.dumps(json_schema(), indent=2)
    if out is None:
        print(text)
    else:
        out.write_text(text + "\n")


def _open(target: str, variant: Optional[str], threads: Optional[int] = None, streams: int = 1) -> Any:
    """A local artifact (path), or a model served by Triton (a URL; `streams` requests at once)."""
    import edgevision

    if "://" in target:
        if threads is not None:
            from edgevision.errors import InputError

            raise InputError("--threads applies to a local artifact; a served model's threads are the server's")
        return edgevision.load(target, variant, workers=streams)
    return edgevision.load(Path(target), variant, threads=threads, streams=streams)


def _classes(text: Optional[str]) -> Optional[list]:
    """--classes "person,2" -> ["person", 2]."""
    return [int(c) if c.strip().isdigit() else c.strip() for c in text.split(",") if c.strip()] if text else None


def _quiet_opencv() -> None:
    """OpenCV's and FFmpeg's own log lines (at each reconnect attempt, "[http @ 0x...] Stream ends
    prematurely") repeat what `run` says more clearly. OpenCV reads OPENCV_FFMPEG_LOGLEVEL when its
    FFmpeg backend starts (-8: AV_LOG_QUIET); a value the user set is kept."""
    import os

    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    try:
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except (ImportError, AttributeError):
        pass


def _print_stream_stats(stats: dict) -> None:
    lat, st = stats["latency_ms"], stats["stages_ms"]
    print(f"{stats['frames']} frames in {stats['seconds']:.1f} s: {stats['fps']:.1f} FPS, {stats['dropped']} dropped; "
          f"capture to result p50 {lat['p50']} ms, p99 {lat['p99']} ms "
          f"(wait {st['wait']['p50']}, pre {st['pre']['p50']}, infer {st['infer']['p50']}, post {st['post']['p50']} ms p50)")
    for s in stats["sources"]:
        print(f"  source {s['source']}: read {s['read']}, inferred {s['inferred']}, dropped {s['dropped']}, "
              f"reconnects {s['reconnects']}" + (f", unreadable {s['unreadable']} (skipped)" if s["unreadable"] else ""))
    for v in stats.get("videos", []):
        print(f"  video: {v['path']} ({v['frames']} frames)")
