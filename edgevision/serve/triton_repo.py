"""`edgevision export triton`: an artifact's variants -> a Triton model repository.

Per chosen variant V of artifact A:
    A-V/                  pipeline model (Python backend): images in, results out
        config.pbtxt, labels.txt, 1/model.py (serve/triton_model.py), 1/variant/ (the variant folder)
    A-V-engine/           the graph itself: native ONNX Runtime / OpenVINO / TensorRT (--engine native),
        config.pbtxt, labels.txt, 1/model.onnx | model.xml + model.bin | model.plan
                          or edgevision's runner on the Python backend (--engine python)
    edgevision-triton.json   what was written and skipped (and why), and the sha256 of every file

The repository is written beside its destination and renamed into place whole; it replaces only an
earlier edgevision repository or an empty folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from edgevision.artifact import file_entries, inside, read_json, read_manifest, read_variant, verify_files, write_json
from edgevision.backends.base import create_runner, numpy_dtype
from edgevision.errors import ArtifactError, BackendError, OutputError
from edgevision.records import SCHEMA_VERSION, ModelInfo
from edgevision.serve import triton_config as tc

INDEX = "edgevision-triton.json"
MODEL_PY = Path(__file__).with_name("triton_model.py")
# Triton's native backend for each edgevision backend: config keys and the model file name Triton looks for
NATIVE = {"onnxruntime": ({"platform": "onnxruntime_onnx"}, "model.onnx"),
          "openvino": ({"backend": "openvino"}, "model.xml"),
          "tensorrt": ({"platform": "tensorrt_plan"}, "model.plan")}


@dataclass
class RepositoryReport:
    path: Path
    models: List[Dict[str, str]] = field(default_factory=list)  # name, kind, variant, backend
    skipped: List[Dict[str, str]] = field(default_factory=list)  # name, why


@dataclass(frozen=True)
class ServeOptions:
    instances: int = 1  # model instances (Triton's instance_group count)
    max_batch: int = 8  # pipeline: requests per execute()
    queue_delay_us: Optional[int] = 0  # dynamic batching's wait for more requests (0: what is queued); None: off
    engine: str = "native"  # native | python | none
    threads: Optional[int] = None  # engine threads per instance (default: the cores / instances)


def export_repository(artifact: Path, out: Path, variants: Optional[Sequence[str]] = None,
                      options: ServeOptions = ServeOptions()) -> RepositoryReport:
    manifest = read_manifest(artifact)
    chosen = _choose(artifact, manifest, variants)
    _check_destination(out, artifact)
    threads = options.threads or max(1, (os.cpu_count() or 1) // options.instances)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        report = RepositoryReport(path=out)
        for name in chosen:
            _write_variant(artifact, manifest.name, name, staging, options, threads, report)
        write_json(staging / INDEX, {"schema_version": SCHEMA_VERSION, "artifact": manifest.name, "models": report.models,
                                     "skipped": report.skipped, "files": file_entries(staging, exclude=(INDEX,))})
        _replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def verify_repository(repo: Path) -> Dict[str, Any]:
    """The repository's index, after checking every file against its sha256 and every config.pbtxt
    against Triton's schema; an ArtifactError names the first problem."""
    index = read_json(Path(repo) / INDEX, "Triton repository index")
    verify_files(Path(repo), index.get("files") or {})
    for model in index.get("models", []):
        tc.parse(inside(Path(repo), f"{model['name']}/config.pbtxt", "models"))
    return index


def _choose(artifact: Path, manifest: Any, variants: Optional[Sequence[str]]) -> List[str]:
    names = list(variants or [v.name for v in manifest.variants if v.status == "passed"])
    if not names:
        raise ArtifactError(f"{artifact}: no variant passed verification; name one with --variant to serve it anyway")
    for name in names:
        if name not in manifest.names:
            raise ArtifactError(f"{artifact}: no variant '{name}' (variants: {', '.join(manifest.names)})")
    return names


def _check_destination(out: Path, artifact: Path) -> None:
    if out.resolve().is_relative_to(Path(artifact).resolve()):
        raise OutputError(f"--out {out}: inside the artifact {artifact}; write the repository somewhere else")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputError(f"--out {out}: exists and is not a folder; choose another path")
    if out.is_dir() and any(out.iterdir()) and not (out / INDEX).is_file():
        raise OutputError(f"--out {out}: a folder with other files in it (no {INDEX}); edgevision replaces only a "
                          "repository it wrote, or an empty folder")


def _replace(staging: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_variant(artifact: Path, artifact_name: str, variant: str, root: Path, options: ServeOptions, threads: int,
                   report: RepositoryReport) -> None:
    vdir = inside(artifact, variant, "variant")
    found = read_variant(vdir)
    info = found.info  # the variant's own contract (its batch limit may be below the artifact's)
    verify_files(vdir, found.variant.files or {})
    base = f"{artifact_name}-{variant}"
    model_dir = root / base
    shutil.copytree(vdir, model_dir / "1" / "variant")
    shutil.copyfile(MODEL_PY, model_dir / "1" / "model.py")
    config = tc.pipeline_config(base, info, variant, max_batch=max(options.max_batch, info.max_batch),
                                instances=options.instances, threads=threads, queue_delay_us=options.queue_delay_us)
    _write_config(model_dir, config, info)
    report.models.append({"name": base, "kind": "pipeline", "variant": variant, "backend": found.variant.backend})
    if options.engine != "none":
        _write_engine(vdir, found, f"{base}-engine", root, options, threads, report)


def _write_engine(vdir: Path, found: Any, name: str, root: Path, options: ServeOptions, threads: int,
                  report: RepositoryReport) -> None:
    record, info = found.variant, found.info
    info = replace(info, max_batch=min(info.max_batch, int(record.settings.get("max_batch", info.max_batch))))
    files = {role: vdir / rel for role, rel in record.settings["files"].items()}
    if options.engine == "native" and record.backend not in NATIVE:
        report.skipped.append({"name": name, "why": f"Triton has no {record.backend} backend; the pipeline model serves "
                                                    "this variant (or --engine python serves its graph)"})
        return
    try:
        inputs, outputs = _graph_tensors(record.backend, files, record.settings)
    except BackendError as e:
        report.skipped.append({"name": name, "why": f"its graph could not be opened here to read its inputs and "
                                                    f"outputs ({e}); export on a machine with {record.backend}"})
        return
    model_dir = root / name
    (model_dir / "1").mkdir(parents=True)
    if options.engine == "python":
        shutil.copytree(vdir, model_dir / "1" / "variant")
        shutil.copyfile(MODEL_PY, model_dir / "1" / "model.py")
        engine: Dict[str, str] = {"backend": "python"}
    else:
        engine = _native_files(record.backend, files, model_dir / "1", name)
    config = tc.engine_config(name, info, record.name, engine, inputs, outputs, instances=options.instances,
                              queue_delay_us=options.queue_delay_us, threads=threads if options.engine == "python" else None)
    _write_config(model_dir, config, info)
    report.models.append({"name": name, "kind": "engine", "variant": record.name,
                          "backend": "python" if options.engine == "python" else record.backend})


def _native_files(backend: str, files: Dict[str, Path], version_dir: Path, name: str) -> Dict[str, str]:
    keys, filename = NATIVE[backend]
    if backend == "tensorrt":
        plan = files.get("engine") or files["model"].with_name("model.engine")
        if not plan.is_file():
            raise ArtifactError(f"{name}: the TensorRT engine is built on the device (load the variant there once), "
                                "then export on that device; an engine is tied to its GPU and TensorRT version")
        shutil.copyfile(plan, version_dir / filename)
    else:
        shutil.copyfile(files["model"], version_dir / filename)
    if backend == "openvino":
        shutil.copyfile(files["weights"], version_dir / "model.bin")
    return {**keys, "default_model_filename": filename}


def _graph_tensors(backend: str, files: Dict[str, Path], settings: Dict[str, Any]
                   ) -> Tuple[List[tc.Tensor], List[tc.Tensor]]:
    """The graph's inputs and outputs as its engine reports them, without the batch dimension."""
    with create_runner(backend, files, settings, threads=1) as runner:
        def tensors(specs: Any) -> List[tc.Tensor]:
            out = []
            for spec in specs:
                dtype = numpy_dtype(spec.dtype)
                if dtype is None:
                    raise BackendError(f"graph tensor '{spec.name}' has type {spec.dtype}, which Triton configs here do not map")
                out.append((spec.name, dtype, [d if isinstance(d, int) and d > 0 else -1 for d in spec.shape[1:]]))
            return out

        return tensors(runner.inputs), tensors(runner.outputs)


def _write_config(model_dir: Path, config: Any, info: ModelInfo) -> None:
    (model_dir / "labels.txt").write_text("".join(f"{label}\n" for label in info.labels))
    (model_dir / "config.pbtxt").write_text(tc.to_text(config))
    tc.parse(model_dir / "config.pbtxt")  # read back through Triton's schema
