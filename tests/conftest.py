"""Shared fixtures: small recipes compiled once per session (random weights, BN re-estimated)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import yaml

from edgevision.reporting import SilentReporter


Quiet = SilentReporter  # the tests' name for it
ROOT = Path(__file__).resolve().parents[1]


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
        "verify": {"images": 4, "timing_rounds": 2},
        "output": str(out / name),
    }
    for key, value in extra.items():
        d[key] = {**d[key], **value} if isinstance(value, dict) and isinstance(d.get(key), dict) else value
    return d


def calibrated_checkpoint(recipe_data: dict[str, Any], path: Path) -> Path:
    """Random weights with BatchNorm statistics re-estimated on shapes images (see batchnorm.py)."""
    from edgevision.random_weights import reestimated_checkpoint

    return reestimated_checkpoint(recipe_data, path)


@pytest.fixture(scope="session")
def build_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("build")


@pytest.fixture(scope="session")
def compiled(build_root: Path) -> Callable[..., tuple[dict[str, Any], Path]]:
    """compiled(name, task, source, size, **extra) -> (manifest, artifact dir), cached per session."""
    from edgevision import api
    from edgevision.recipe import parse_recipe

    cache: dict[str, tuple[dict[str, Any], Path]] = {}

    def make(name: str, task: str, source: str, size: int, **extra: Any) -> tuple[dict[str, Any], Path]:
        if name not in cache:
            data = recipe_dict(name, task, source, size, build_root, **extra)
            data["model"]["checkpoint"] = str(calibrated_checkpoint(data, build_root / f"{name}.pt"))
            manifest = api.compile(parse_recipe(data), reporter=Quiet(), threads=2)
            cache[name] = (manifest, build_root / name)
        return cache[name]

    return make


@pytest.fixture(scope="session")
def unet_artifact(compiled):  # noqa: ANN001, ANN201
    return compiled("unet", "segmentation", "unet", 64, model={"kwargs": {"width": 4, "depth": 3}},
                    export={"argmax": True},
                    targets=[{"backend": "onnxruntime", "precision": "fp32"}, {"backend": "openvino", "precision": "fp32"},
                             {"backend": "openvino", "precision": "bf16"}])


def readme_command() -> list[str]:
    """The README's main command (`pip install ... && edgevision compile recipes/quickstart.yaml`), as argv."""
    text = (ROOT / "README.md").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("pip install") and "edgevision compile" in ln)
    command = shlex.split(line.split("&&", 1)[1])
    assert command[:2] == ["edgevision", "compile"]
    return [sys.executable, "-m", "edgevision", *command[1:]]


@pytest.fixture(scope="session")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """The README's main command run once, as a user would, in a fresh working directory: trains the
    quickstart detector and compiles it (build/quickstart there). Shared by the README test and the
    video tests, which need a detector that finds what is in the frames."""
    workdir = tmp_path_factory.mktemp("quickstart")
    shutil.copytree(ROOT / "recipes", workdir / "recipes")
    return workdir, subprocess.run(readme_command(), cwd=workdir, capture_output=True, text=True, timeout=1200)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
