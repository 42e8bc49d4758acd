"""Where `predict` spends its time, end to end, against PyTorch eager with torchvision's own pre-
and post-processing (issue 14).

    python benchmarks/e2e.py       # ssdlite320, lraspp-mnv3, mobilenet-v3-large; 3 repetitions x 12 rounds x 4 calls
    python benchmarks/e2e.py --rounds 20 --repeats 2 --only ssdlite320

For each model (compiled as in benchmarks/published.py: random weights with BatchNorm
re-estimated, every CPU backend and precision) and each input (sklearn's china.jpg resized to the
network's input size, as the published benchmark feeds it; the 427x640 photo itself; the photo
as a 1280x720 camera frame), every contender is timed in one process, interleaved by blocks
(A A A B B B C C C ..., the first call of a block untimed), each call split into phases: JPEG
decode, pre-processing, engine, post-processing. Contenders: every variant through Predictor;
edgevision's PyTorch reference through the same pre-processing; torchvision eager with its own
pre- and post-processing (decode_jpeg -> the model's own transform / resize + normalize -> the
model -> F.interpolate + argmax / softmax + top-5); and, without the engine, the pre-processing
(and segmentation label map) of two earlier commits, from git history, for the before/after:
the numpy pre-processing (37bcaf1) and OpenCV INTER_AREA with boolean-mask label maps (d506601).

Reported per contender: median over repetitions of the p50s, their spread (max/min - 1), the
host share (pre + post over pre + engine + post: decode excluded), and the speedup over torchvision
eager end to end. Results: benchmarks/results/e2e.json and e2e.md, with the machine and its load.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]


import edgevision  # noqa: E402
from edgevision.artifact import read_manifest  # noqa: E402
from edgevision.console import RichReporter  # noqa: E402
from edgevision.runtime.images import read_image  # noqa: E402
from edgevision.verify.reference import reference_predictor  # noqa: E402
from published import artifact_for  # noqa: E402
from record import record  # noqa: E402

MODELS = ["ssdlite320", "lraspp-mnv3", "mobilenet-v3-large"]
BEFORE_NUMPY = "37bcaf1"  # the last commit with the numpy pre-processing
BEFORE_AREA = "d506601"  # the last with INTER_AREA resizing and boolean-mask label maps
Phases = Dict[str, float]


def _inputs(tmp: Path) -> Dict[str, Path]:
    from PIL import Image
    from sklearn.datasets import load_sample_image

    photo = load_sample_image("china.jpg")
    paths = {"photo 427x640": tmp / "photo.jpg", "frame 1280x720": tmp / "frame.jpg"}
    Image.fromarray(photo).save(paths["photo 427x640"], quality=92)
    Image.fromarray(photo).resize((1280, 720), Image.BICUBIC).save(paths["frame 1280x720"], quality=92)
    return paths


def _at_input_size(inputs: Dict[str, Path], size: List[int], tmp: Path) -> Dict[str, Path]:
    """The photo resized to the network's input size (the published benchmark's case: no resize
    in pre-processing, the label map at network size) first, then the shared inputs."""
    from PIL import Image

    path = tmp / f"photo_{size[0]}x{size[1]}.jpg"
    Image.open(inputs["photo 427x640"]).resize((size[1], size[0]), Image.BICUBIC).save(path, quality=92)
    return {f"photo at input size {size[0]}x{size[1]}": path, **inputs}


def _edgevision(predictor: Any) -> Callable[[Path], Phases]:
    def call(path: Path) -> Phases:
        t0 = time.perf_counter()
        rgb = read_image(path)
        t1 = time.perf_counter()
        feeds, transforms = predictor.feeds([rgb])
        t2 = time.perf_counter()
        outputs = predictor.runner.infer(feeds)
        t3 = time.perf_counter()
        predictor.decode(outputs, transforms, top_k=5, scores=False)
        t4 = time.perf_counter()
        return {"decode": t1 - t0, "pre": t2 - t1, "infer": t3 - t2, "post": t4 - t3}
    return call


def _torchvision(manifest: Dict[str, Any]) -> Callable[[Path], Phases]:
    """torchvision eager as its users run it: decode_jpeg, the model's own transform (detection)
    or resize + normalize (segmentation, classification), the model, its own post-processing
    (bilinear logits at image size + argmax; softmax + top-5)."""
    import torch
    import torch.nn.functional as F
    from torchvision.io import decode_jpeg, read_file
    from torchvision.transforms.v2 import functional as TF

    from edgevision.models.sources import build_model
    from edgevision.recipe import parse_recipe

    recipe = parse_recipe(manifest.recipe["content"])
    model = build_model(recipe.model).eval()
    mean, std, size = list(recipe.input.mean), list(recipe.input.std), list(recipe.input.size)
    detection = manifest.info.task == "detection"
    if detection:  # the model's own transform resizes and normalises; make it use the recipe's statistics
        model.transform.image_mean, model.transform.image_std = mean, std

    @torch.inference_mode()
    def call(path: Path) -> Phases:
        t0 = time.perf_counter()
        img = decode_jpeg(read_file(str(path)))
        t1 = time.perf_counter()
        if detection:  # pre-processing happens inside the model call: count it as engine time
            t2 = time.perf_counter()
            model([img.float() / 255])
            t3 = t4 = time.perf_counter()
        else:
            x = TF.normalize(TF.resize(img, size, antialias=True).float() / 255, mean, std)[None]
            t2 = time.perf_counter()
            out = model(x)
            t3 = time.perf_counter()
            if isinstance(out, dict):  # segmentation
                F.interpolate(out["out"], size=img.shape[-2:], mode="bilinear", align_corners=False).argmax(1)
            else:
                out.softmax(1).topk(5)
            t4 = time.perf_counter()
        return {"decode": t1 - t0, "pre": t2 - t1, "infer": t3 - t2, "post": t4 - t3}

    return call


def _from_history(rev: str, path: str, tmp: Path) -> Any:
    """A module of this repository as it was at commit `rev`, loaded under its own name."""
    source = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout
    name = f"{Path(path).stem}_{rev}"
    (tmp / f"{name}.py").write_text(source)
    spec = importlib.util.spec_from_file_location(name, tmp / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _before(rev: str, predictor: Any, tmp: Path) -> Callable[[Path], Phases]:
    """Pre-processing (and, for segmentation, the label map) as shipped at `rev`, timed alone: the
    before of a before/after in one interleaved run. The engine is not run (its outputs for the
    post-processing come from one call of `predictor` before timing)."""
    pre = _from_history(rev, "edgevision/runtime/preprocess.py", tmp)
    input_spec = pre.InputSpec.from_dict(predictor.input.to_dict())
    post, outputs = None, {}
    if predictor.task == "segmentation" and rev != BEFORE_NUMPY:
        post = _from_history(rev, "edgevision/runtime/postprocess.py", tmp)

    def call(path: Path) -> Phases:
        t0 = time.perf_counter()
        rgb = read_image(path)
        t1 = time.perf_counter()
        _, [t] = pre.preprocess([rgb], input_spec)
        t2 = t3 = time.perf_counter()
        if post is not None:
            if path not in outputs:
                outputs[path] = predictor.runner.infer(predictor.feeds([rgb])[0])
            t3 = time.perf_counter()
            post.segmentation(outputs[path], 0, t, predictor.input.size, predictor.labels)
        return {"decode": t1 - t0, "pre": t2 - t1, "infer": 0.0, "post": time.perf_counter() - t3}
    return call


def _measure(contenders: Dict[str, Callable[[Path], Phases]], path: Path, rounds: int, repeats: int,
             block: int) -> Dict[str, Any]:
    for fn in contenders.values():  # warm-up (first calls compile, allocate, fault pages)
        for _ in range(3):
            fn(path)
    reps: Dict[str, List[Dict[str, float]]] = {n: [] for n in contenders}
    for _ in range(repeats):
        samples: Dict[str, List[Phases]] = {n: [] for n in contenders}
        for _ in range(rounds):
            for name, fn in contenders.items():
                fn(path)  # untimed: the engine wakes up after the others ran
                samples[name].extend(fn(path) for _ in range(block))
        for name, calls in samples.items():
            p50 = {k: 1000 * statistics.median(c[k] for c in calls) for k in ("decode", "pre", "infer", "post")}
            p50["e2e"] = 1000 * statistics.median(sum(c.values()) for c in calls)
            reps[name].append(p50)
    out = {}
    for name, runs in reps.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        spread = max(r["e2e"] for r in runs) / min(r["e2e"] for r in runs) - 1
        engine_side = med["pre"] + med["infer"] + med["post"]
        out[name] = {**{k: round(v, 3) for k, v in med.items()}, "spread": round(spread, 3),
                     "host_share": round((med["pre"] + med["post"]) / engine_side, 3) if med["infer"] else None,
                     "e2e_per_repeat": [round(r["e2e"], 3) for r in runs]}
    return out


def run_model(name: str, inputs: Dict[str, Path], rounds: int, repeats: int, block: int, threads: int,
              tmp: Path) -> Dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    root = artifact_for(name, RichReporter())
    manifest = read_manifest(root)
    contenders: Dict[str, Callable[[Path], Phases]] = {"torchvision-eager": _torchvision(manifest)}
    predictors = {"pytorch-fp32 (edgevision pre/post)": reference_predictor(manifest, threads)}
    for v in manifest.variants:
        predictors[v.name] = edgevision.load(root / v.name, threads=threads)
    contenders.update({n: _edgevision(p) for n, p in predictors.items()})
    fp32 = next(p for n, p in predictors.items() if n.endswith("fp32") and not n.startswith("pytorch"))
    contenders[f"numpy pre-processing ({BEFORE_NUMPY})"] = _before(BEFORE_NUMPY, fp32, tmp)
    contenders[f"INTER_AREA pre / mask label map ({BEFORE_AREA})"] = _before(BEFORE_AREA, fp32, tmp)
    try:
        sized = _at_input_size(inputs, list(manifest.info.input.size), tmp)
        results = {label: _measure(contenders, path, rounds, repeats, block) for label, path in sized.items()}
    finally:
        for p in predictors.values():
            p.close()
    status = {v.name: v.status for v in manifest.variants}
    return {"model": name, "task": manifest.info.task, "input_size": list(manifest.info.input.size), "status": status,
            "results": results}


def markdown(report: Dict[str, Any]) -> str:
    m = report["machine"]
    lines = ["# End to end: where `predict` spends its time", "",
             f"`python benchmarks/e2e.py --rounds {report['rounds']} --block {report['block']} --repeats {report['repeats']}`, "
             f"{report['seconds'] / 60:.1f} min, on {m['cpu']} ({m['cores']} cores, {report['threads']} threads; ISA "
             f"{' '.join(m['isa'])}); load average {report['load_before']} before, {report['load_after']} after.", "",
             "Median over repetitions of per-repetition p50 ms; contenders interleaved in one process, a block of "
             "calls each per round, the first untimed (steady state: one call at a time, interleaved, cost OpenVINO "
             "about 5 ms a call, its threads and caches cold after another engine ran); spread = slowest / fastest "
             "repetition - 1; host = (pre + post) / (pre + engine + post), decode excluded; speedup = torchvision eager "
             "e2e / contender e2e. Random weights (speed only). torchvision detection runs its own resize and normalise "
             "inside the model call, so its pre-processing is counted as engine time."]
    for model in report["models"]:
        for label, rows in model["results"].items():
            base = rows["torchvision-eager"]["e2e"]
            lines += ["", f"## {model['model']} ({model['task']}, {model['input_size'][0]}x{model['input_size'][1]}), "
                      f"{label}", "", "| contender | status | decode | pre | engine | post | e2e | spread | host | speedup |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for name, r in rows.items():
                host = "-" if r["host_share"] is None else f"{100 * r['host_share']:.0f}%"
                speed = "-" if not r["infer"] else f"{base / r['e2e']:.2f}x"
                lines.append(f"| {name} | {model['status'].get(name, '-')} | {r['decode']:.2f} | {r['pre']:.2f} | "
                             f"{r['infer']:.2f} | {r['post']:.2f} | {r['e2e']:.2f} | {100 * r['spread']:.0f}% | {host} | {speed} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--block", type=int, default=4, help="timed calls per contender per round (after one untimed)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only", default=",".join(MODELS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        inputs = _inputs(Path(tmp))
        record("e2e", args.threads, {"rounds": args.rounds, "repeats": args.repeats, "block": args.block},
               lambda: [run_model(n, inputs, args.rounds, args.repeats, args.block, args.threads, Path(tmp))
                        for n in args.only.split(",")], markdown)

if __name__ == "__main__":
    main()
