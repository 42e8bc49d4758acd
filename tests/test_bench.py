"""`edgevision benchmark`: statistics, interleaving, and a real run on a small U-Net artifact with a
failing variant and a CPU-emulated TensorRT variant; the report files, their schema, and the HTML
as Chromium renders it."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image

from conftest import Quiet, calibrated_checkpoint, recipe_dict, write_recipe
from edgevision.verify.latency import MIN_ROUNDS, interleaved, summarize
from edgevision.bench.report import render_html, render_markdown, write_reports
from edgevision.bench.schema import json_schema
from edgevision.api import benchmark
from edgevision.bench.run import BenchOptions
from edgevision.errors import ArtifactError, RecipeError

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "docs" / "report.schema.json"
BAR_CYAN = np.array([0x17, 0xBE, 0xCF])  # the first throughput bars (bench/report.py _MODE_COLORS); not in the CSS


def test_summarize_known_timings() -> None:
    s = summarize(np.arange(1, 101, dtype=float))  # 1..100 ms
    assert (s["n"], s["p50"], s["p90"], s["p99"], s["min"], s["max"]) == (100, 50.5, 90.1, 99.01, 1.0, 100.0)
    assert s["mean"] == 50.5 and s["std"] == pytest.approx(28.866, abs=1e-3)
    skewed = summarize(np.array([1.0] * 98 + [50.0, 100.0]))
    assert skewed["p50"] == 1.0 and skewed["p90"] == 1.0 and skewed["p99"] == pytest.approx(50.5)


def test_interleaved_takes_turns_after_warmup() -> None:
    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    out = interleaved(fns, rounds=3, warmup=2)
    assert calls == ["a", "a", "b", "b", "c", "c"] + ["a", "b", "c"] * 3
    assert {k: v.size for k, v in out.items()} == {"a": 3, "b": 3, "c": 3}
    calls.clear()
    slow_first: list[float] = []  # a block's first call is the slow one (cold caches): it is not timed
    fns = {"a": lambda: (calls.append("a"), time.sleep(0.02 if len(slow_first) % 3 == 0 else 0), slow_first.append(1)),
           "b": lambda: calls.append("b")}
    out = interleaved(fns, rounds=2, warmup=0, block=3)
    assert calls == ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3
    assert out["a"].size == out["b"].size == 4 and out["a"].max() < 10.0


def test_interleaved_duration_and_minimum_rounds() -> None:
    fns = {"slow": lambda: time.sleep(0.01), "fast": lambda: None}
    short = interleaved(fns, duration=0.001, warmup=0)  # over at once, but every model gets MIN_ROUNDS
    assert short["slow"].size == short["fast"].size == MIN_ROUNDS
    assert short["slow"].min() >= 9.0 and np.median(short["fast"]) < 1.0
    longer = interleaved(fns, duration=0.2, warmup=0)  # ~0.01 s per round: past the minimum, at most 21 rounds
    assert MIN_ROUNDS < longer["slow"].size <= 21
    assert interleaved(fns, rounds=2, duration=10.0, warmup=0)["slow"].size == 2  # rounds caps a duration
    with pytest.raises(ValueError):
        interleaved(fns)


@pytest.fixture(scope="session")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """A benchmark started from a recipe whose compile fails one variant (an impossible bf16
    tolerance): the failed artifact is benchmarked, the failure reported."""
    root = tmp_path_factory.mktemp("bench")
    data = recipe_dict("benchunet", "segmentation", "unet", 64, root, model={"kwargs": {"width": 4, "depth": 3}},
                       targets=[{"backend": "onnxruntime", "precision": "fp32"}, {"backend": "openvino", "precision": "fp32"},
                                {"backend": "openvino", "precision": "bf16"}, {"backend": "tensorrt", "precision": "fp16"}],
                       verify={"images": 2, "timing_rounds": 0,
                               "tolerances": {"bf16": {"min_cosine": 0.9999999, "max_abs_diff": 1e-7, "min_agreement": 1.0}}},
                       benchmark={"batch_sizes": [1, 2]})
    data["model"]["checkpoint"] = str(calibrated_checkpoint(data, root / "benchunet.pt"))
    recipe = write_recipe(root / "benchunet.yaml", data)
    options = BenchOptions({"iterations": 6, "warmup": 1, "async_seconds": 0.2}, threads=2)
    return benchmark(recipe, options, Quiet()), root


def test_report_follows_the_committed_schema(bench_run) -> None:  # noqa: ANN001
    report, _ = bench_run
    assert json.loads(SCHEMA.read_text()) == json_schema(), "docs/report.schema.json is stale: edgevision schema --report --out docs/report.schema.json"
    jsonschema.validate(report, json.loads(SCHEMA.read_text()))
    broken = json.loads(json.dumps(report))
    broken["variants"][0]["latency"]["e2e"].pop("p99")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, json.loads(SCHEMA.read_text()))


def test_every_variant_is_reported_with_its_status(bench_run) -> None:  # noqa: ANN001
    report, root = bench_run
    assert report["artifact"]["path"].endswith("benchunet.failed")
    rows = {r["name"]: r for r in report["variants"]}
    assert list(rows) == ["pytorch-fp32", "onnxruntime-fp32", "openvino-fp32", "openvino-bf16", "tensorrt-fp16"]
    assert rows["pytorch-fp32"]["status"] == "reference" and rows["pytorch-fp32"]["baseline"]
    bf16 = rows["openvino-bf16"]
    assert bf16["status"] == "failed" and any("cosine" in r or "diff" in r for r in bf16["reasons"])
    assert bf16["latency"] is not None  # a failed variant is still measured, and shown as failed
    trt = rows["tensorrt-fp16"]
    assert trt.get("latency") is None and any("not timed" in n for n in trt["notes"])
    assert trt["accuracy"]["miou"] == pytest.approx(rows["pytorch-fp32"]["accuracy"]["miou"], abs=0.01)
    md = render_markdown(report)
    assert re.search(r"^\| openvino-bf16 \| openvino \| bf16 \| failed \|", md, re.M)
    assert "openvino-bf16 (failed): " in md and "tensorrt-fp16: CPU emulation" in md


def test_measurements_are_consistent(bench_run) -> None:  # noqa: ANN001
    report, _ = bench_run
    rows = {r["name"]: r for r in report["variants"]}
    timed = [r for r in report["variants"] if r.get("latency")]
    assert {r["name"] for r in timed} == {"pytorch-fp32", "onnxruntime-fp32", "openvino-fp32", "openvino-bf16"}
    for r in timed:
        lat = r["latency"]
        assert lat["e2e"]["n"] == lat["infer"]["n"] == 6 == len(lat["e2e_samples_ms"])
        assert lat["e2e"]["p50"] == pytest.approx(float(np.percentile(lat["e2e_samples_ms"], 50)), abs=1e-3)
        assert r["speedup"]["e2e"] == pytest.approx(rows["pytorch-fp32"]["latency"]["e2e"]["p50"] / lat["e2e"]["p50"], abs=6e-4)  # 3 decimals
        modes = {(t["mode"], t["batch"]) for t in r["throughput"]}
        assert {("sync", 1), ("sync", 2)} <= modes
        assert ("async", 1) in modes if r["backend"] == "openvino" else ("async", 1) not in modes
        assert r["memory"]["peak_rss_mb"] > r["memory"]["rss_start_mb"] > 0
    assert rows["pytorch-fp32"]["speedup"] == {"infer": 1.0, "e2e": 1.0}
    # torch alone is hundreds of MB; a process holding only onnxruntime is far smaller
    assert rows["pytorch-fp32"]["memory"]["peak_rss_mb"] > rows["onnxruntime-fp32"]["memory"]["peak_rss_mb"] + 100
    assert rows["onnxruntime-fp32"]["accuracy_drop"] == pytest.approx(0.0, abs=0.01)
    assert report["machine"]["threads"] == 2 and report["machine"]["libraries"]["onnxruntime"]


def test_report_files_are_written_whole(bench_run, tmp_path: Path) -> None:  # noqa: ANN001
    report, _ = bench_run
    paths = write_reports(report, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "report.json", "report.md"]
    assert json.loads(paths[0].read_text()) == report
    bad = json.loads(json.dumps(report))
    bad["variants"][1]["status"] = "great"
    with pytest.raises(Exception, match="status"):
        write_reports(bad, tmp_path / "bad")
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def _png_images(page: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(b))) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_html_is_self_contained_with_plots(bench_run) -> None:  # noqa: ANN001
    report, _ = bench_run
    page = render_html(report)
    images = _png_images(page)
    assert len(images) == 3 and all(im.size[0] > 300 and im.size[1] > 200 for im in images)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert '<tr class="failed">' in page and "openvino-bf16" in page
    no_accuracy = json.loads(json.dumps(report))
    for row in no_accuracy["variants"]:
        row.pop("accuracy", None)
    assert len(_png_images(render_html(no_accuracy))) == 2  # no empty latency-vs-accuracy plot


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _screenshot(html: Path, png: Path) -> np.ndarray:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--hide-scrollbars",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={png.parent / ('profile-' + png.stem)}", "--window-size=1280,2600", f"--screenshot={png}"]
    subprocess.run([CHROMIUM, *flags, html.as_uri()], capture_output=True, timeout=120, check=True)
    return np.asarray(Image.open(png).convert("RGB")).astype(int)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs Debian's chromium)")
def test_html_renders_in_chromium_with_its_images(bench_run, tmp_path: Path) -> None:  # noqa: ANN001
    report, _ = bench_run
    page = render_html(report)
    (tmp_path / "report.html").write_text(page)
    (tmp_path / "no_images.html").write_text(re.sub(r'<img [^>]+>', "", page))
    shot = _screenshot(tmp_path / "report.html", tmp_path / "report.png")
    bare = _screenshot(tmp_path / "no_images.html", tmp_path / "bare.png")

    def cyan(a: np.ndarray) -> int:  # pixels of the throughput plot's bars: the images were drawn
        return int((np.abs(a - BAR_CYAN).sum(axis=2) < 30).sum())

    assert cyan(shot) > 2000 and cyan(bare) == 0
    text_rows = (np.abs(bare - 255).sum(axis=2) > 100).any(axis=1).sum()
    assert text_rows > 100  # the tables themselves are rendered too


def test_benchmark_options_are_declared_once() -> None:
    """One table (benchmark_options): the recipe's section takes its names, defaults and help, and
    `edgevision benchmark` has an option for each, with the same help."""
    from typer.main import get_command

    from edgevision.benchmark_options import BENCH_OPTIONS, flag
    from edgevision.commands import app
    from edgevision.recipe import BenchmarkSpec

    fields = BenchmarkSpec.model_fields
    assert list(fields) == list(BENCH_OPTIONS)
    params = {opt: p for p in get_command(app).commands["benchmark"].params for opt in p.opts}
    for name, (value, text) in BENCH_OPTIONS.items():
        assert fields[name].default == value and fields[name].description == text
        assert text in params[flag(name)].help and params[flag(name)].default is None  # None: the recipe's value


def test_bad_targets_and_options(bench_run, tmp_path: Path) -> None:  # noqa: ANN001
    report, _ = bench_run
    with pytest.raises(RecipeError, match="neither an artifact folder nor a recipe"):
        benchmark(tmp_path / "missing", reporter=Quiet())
    with pytest.raises(ArtifactError, match="manifest.json"):
        benchmark(tmp_path, reporter=Quiet())
    artifact = Path(report["artifact"]["path"])
    with pytest.raises(RecipeError, match="no variant 'nope'"):
        benchmark(artifact, BenchOptions(variants=["nope"]), Quiet())
    # the options' limits are the recipe section's (recipe.BenchmarkSpec), checked before anything runs
    with pytest.raises(RecipeError, match=r"--iterations 0: Input should be greater than or equal to 1"):
        benchmark(artifact, BenchOptions({"iterations": 0}), Quiet())
    with pytest.raises(RecipeError, match=r"--batch \[1, 65\]: .*between 1 and 64"):
        benchmark(artifact, BenchOptions({"batch_sizes": [1, 65]}), Quiet())
    with pytest.raises(RecipeError, match="'iterationz' does not exist"):
        benchmark(artifact, BenchOptions({"iterationz": 5}), Quiet())


def test_cli_benchmark_quick_on_one_variant(bench_run, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from edgevision.cli import main

    artifact = report_path = Path(bench_run[0]["artifact"]["path"])
    rc = main(["benchmark", str(artifact), "--quick", "--no-memory", "--variants", "onnxruntime-fp32", "--threads", "1",
               "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0 and "onnxruntime-fp32" in out and "openvino-fp32" not in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert [r["name"] for r in report["variants"]] == ["pytorch-fp32", "onnxruntime-fp32"]
    assert report["settings"]["quick"] and report["settings"]["iterations"] == 30 and report["machine"]["threads"] == 1
    assert report["variants"][1]["latency"]["e2e"]["n"] == 30 and report["variants"][1].get("memory") is None
    assert not (report_path / "report.json").exists()  # --out was honoured

    assert main(["benchmark", str(artifact), "--batch", "1,x"]) == 1
    assert "--batch '1,x'" in capsys.readouterr().err
    assert main(["schema", "--report"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(SCHEMA.read_text())
