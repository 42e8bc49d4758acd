"""Shared fixtures: small recipes compiled once per session (random weights, BN re-estimated)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import yaml

from edgevision.reporting import SilentReporter


Quiet = SilentReporter  # the tests' name for it

# The suite runs on one pytest-xdist worker per core: a thread waiting on its OpenMP pool (PyTorch's) sleeps
# instead of spinning, or one worker's spinning threads take the core the other computes on (measured on
# tests/test_rcnn_builders.py with 2 workers on 2 cores: 98 s with spinning, 83 s without; 130 s on one worker).
# Set before anything imports torch, in the worker and so in every process it starts.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker per CPU this process may run on (what taskset or a container's cpuset allows,
    hyper-threads included: xdist's own count takes physical cores, 1 on a VM whose 2 vCPUs are one core's two
    threads), at most 4 (a worker holds several GB at its peak). PYTEST_XDIST_AUTO_NUM_WORKERS overrides it."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS", "").isdigit():
        return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
    return max(1, min(4, len(os.sched_getaffinity(0))))


# The fast tier, `pytest -m "not slow"`, leaves out what trains a model or compiles a large one: a test that
# needs one of these fixtures is marked slow here (besides the tests marked by hand). CI runs everything.
SLOW_FIXTURES = {"quickstart", "detector", "maskrcnn_artifact", "keypointrcnn_artifact", "frcnn", "trained_frcnn", "yolo",
                 "arm", "obb", "rtdetr", "executorch_artifacts"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def openvino_runs_bf16() -> bool:
    """Whether OpenVINO's CPU plugin has bf16 kernels here (AVX-512 BF16 or AMX; older CPUs run an
    f32 fallback when bf16 is asked for). Hosts differ: an Intel Xeon with AMX, an AMD EPYC without."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def write_recipe(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def recipe_dict(name: str, task: str, source: str, size: int, out: Path, **extra: Any) -> dict[str, Any]:
    labels = ["circle", "square", "triangle"] if task == "classification" else ["background", "circle", "square", "triangle"]
    d: dict[str, Any] = {
        "name": name,
        "task": task,
        "model": {"source": source, "labels": labels},
        "input": {"size": [size, size], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        "data": {"val": {"source": "shapes", "count": 6, "seed": 1, "max_objects": 1 if task == "classification" else 3}},
        "targets": [{"backend": "onnxruntime", "precision": "fp32"}, {"backend": "openvino", "precision": "fp32"}],
        "verify": {"images": 4, "timing_rounds": 0},  # latency is the benchmark's (and the quickstart test's) business
        "output": str(out / name),
    }
    for key, value in extra.items():
        d[key] = {**d[key], **value} if isinstance(value, dict) and isinstance(d.get(key), dict) else value
    return d


def calibrated_checkpoint(recipe_data: dict[str, Any], path: Path) -> Path:
    """Random weights with BatchNorm statistics re-estimated on shapes images (see batchnorm.py)."""
    from edgevision.random_weights import reestimated_checkpoint

    return reestimated_checkpoint(recipe_data, path)


# Variables with which a launcher changes what the tools print or how they run: colour forced on (rich, typer),
# a terminal width, warnings turned into errors, start-up code. The tests read that output, so none may leak in.
_LAUNCHER_VARIABLES = ("FORCE_COLOR", "NO_COLOR", "CLICOLOR_FORCE", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS",
                       "LINES", "PYTHONWARNINGS", "PYTHONSTARTUP", "PYTHONINSPECT", "PYTHONDEVMODE", "OMP_NUM_THREADS")


@pytest.fixture(scope="session", autouse=True)
def _session_process_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The process state the suite relies on, set here instead of inherited from whatever launched pytest
    (a background job or nohup starts it with SIGINT ignored, CI with no standard input, another cwd, umask,
    locale or colour setting): session fixtures compile in a working directory of their own (the calibration
    cache lives under ./build), with a C.UTF-8 locale for child processes and the variables above unset."""
    if not _fd_open(0):  # no standard input: keep fd 0 taken, or the next file opened becomes a child's stdin
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    with pytest.MonkeyPatch.context() as mp:
        for name in _LAUNCHER_VARIABLES:
            mp.delenv(name, raising=False)
        mp.setenv("LC_ALL", "C.UTF-8")
        # Ultralytics writes its settings file on import: into this worker's own folder, not the user's ~/.config
        mp.setenv("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("ultralytics-config")))
        mp.chdir(tmp_path_factory.mktemp("session-cwd"))
        with _signals_and_umask():
            yield


@pytest.fixture(autouse=True)
def _test_process_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test: Python's own Ctrl-C handler and default SIGTERM (whatever the last test left), umask 022,
    and an empty working directory of its own (nothing one test writes under ./build is seen by another)."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    with _signals_and_umask():
        yield


@contextmanager
def _signals_and_umask() -> Iterator[None]:
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    umask = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(umask)
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def default_signals() -> None:
    """preexec_fn for a child that must see Ctrl-C and SIGTERM as a terminal's process does (a shell's
    background job starts with SIGINT ignored, and a child inherits an ignored signal)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(scope="session")
def run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder every worker of this run shares (pytest-xdist gives each worker a basetemp of its own, in it):
    what the session fixtures below build once for the whole run lives here."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextmanager
def built_once(run_root: Path, name: str) -> Iterator[Path]:
    """Held while `name` is built or read under run_root: the first worker to ask builds it, the others wait
    for it and find it there. Whatever is built this way is shared read-only: a test that changes it copies it."""
    from filelock import FileLock

    with FileLock(str(run_root / f"{name}.lock")):
        yield run_root / name


@pytest.fixture(scope="session")
def build_root(run_root: Path) -> Path:
    (run_root / "build").mkdir(exist_ok=True)
    return run_root / "build"


@pytest.fixture(scope="session")
def compiled(build_root: Path) -> Callable[..., tuple[dict[str, Any], Path]]:
    """compiled(name, task, source, size, **extra) -> (manifest, artifact dir), built once per run."""
    from edgevision import api
    from edgevision.recipe import parse_recipe

    def make(name: str, task: str, source: str, size: int, **extra: Any) -> tuple[dict[str, Any], Path]:
        with built_once(build_root, name) as out:
            if not (out / "manifest.json").exists():
                data = recipe_dict(name, task, source, size, build_root, **extra)
                data["model"]["checkpoint"] = str(calibrated_checkpoint(data, build_root / f"{name}.pt"))
                api.compile(parse_recipe(data), reporter=Quiet(), threads=2)
            return json.loads((out / "manifest.json").read_text()), out

    return make


# The R-CNN artifacts that test_instances.py and test_stream.py share (the compiled() cache is keyed by name).
# Fewer region proposals than torchvision's 1000 (the same graph, a fraction of the box head's work).
FEW_PROPOSALS = {"rpn_pre_nms_top_n_test": 300, "rpn_post_nms_top_n_test": 150}


@pytest.fixture(scope="session")
def maskrcnn_artifact(compiled):  # noqa: ANN001, ANN201
    """Score threshold 0.5: with these random weights the images keep from 0 to 100 detections, so the mask head
    (run on kept detections only, a data-dependent count) sees a different count per image, and none at all."""
    return compiled("maskrcnn", "instance_segmentation", "maskrcnn_resnet50_fpn", 160,
                    targets=[{"backend": "onnxruntime", "precision": "fp32"}, {"backend": "openvino", "precision": "fp32"},
                             {"backend": "tensorrt", "precision": "fp32"}], export={"nms": {"score_threshold": 0.5}})


@pytest.fixture(scope="session")
def keypointrcnn_artifact(compiled):  # noqa: ANN001, ANN201
    return compiled("keypointrcnn", "keypoints", "keypointrcnn_resnet50_fpn", 160, model={"kwargs": FEW_PROPOSALS},
                    targets=[{"backend": "onnxruntime", "precision": "fp32"}], export={"nms": {"max_detections": 20}})


@pytest.fixture(scope="session")
def unet_artifact(compiled):  # noqa: ANN001, ANN201
    return compiled("unet", "segmentation", "unet", 64, model={"kwargs": {"width": 4, "depth": 3}},
                    export={"argmax": True},
                    targets=[{"backend": "onnxruntime", "precision": "fp32"}, {"backend": "openvino", "precision": "fp32"},
                             {"backend": "openvino", "precision": "bf16"}, {"backend": "ncnn", "precision": "fp32"}])


@pytest.fixture(scope="session")
def classifier_artifact(compiled):  # noqa: ANN001, ANN201
    return compiled("mnv3_backends", "classification", "mobilenet_v3_small", 64,
                    targets=[{"backend": "onnxruntime", "precision": "fp32"}, {"backend": "openvino", "precision": "fp32"},
                             {"backend": "ncnn", "precision": "fp32"}, {"backend": "ncnn", "precision": "fp16"}])


def readme_command() -> list[str]:
    """The README's main command (`pip install ... && edgevision compile recipes/quickstart.yaml`), as argv."""
    text = (ROOT / "README.md").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("pip install") and "edgevision compile" in ln)
    command = shlex.split(line.split("&&", 1)[1])
    assert command[:2] == ["edgevision", "compile"]
    return [sys.executable, "-m", "edgevision", *command[1:]]


@pytest.fixture(scope="session")
def quickstart(run_root: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """The README's main command run once per test run, as a user would, in a fresh working directory: trains
    the quickstart detector and compiles it (build/quickstart there). Shared by the README test and the video
    tests, which need a detector that finds what is in the frames; read-only (the README test reruns the
    command in a copy)."""
    with built_once(run_root, "quickstart") as workdir:
        record = run_root / "quickstart.json"
        if not record.exists():
            workdir.mkdir()
            shutil.copytree(ROOT / "recipes", workdir / "recipes")
            done = subprocess.run(readme_command(), cwd=workdir, capture_output=True, text=True, timeout=1200)
            record.write_text(json.dumps({"args": done.args, "returncode": done.returncode, "stdout": done.stdout,
                                          "stderr": done.stderr}))
        return workdir, subprocess.CompletedProcess(**json.loads(record.read_text()))


@pytest.fixture(scope="session")
def detector(quickstart) -> Path:  # noqa: ANN001
    """The quickstart artifact (build/quickstart of the README's main command), for the video and CLI tests."""
    workdir, first = quickstart
    assert first.returncode == 0, first.stderr[-2000:]
    return workdir / "build" / "quickstart"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
