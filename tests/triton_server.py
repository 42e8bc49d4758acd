"""A real Triton server for the serving tests, in the environment `pip install 'edgevision[triton-server]'` makes:
tritonserver 2.51 with the Python backend (nvidia-pytriton 0.7.0) and the runtime with numpy < 2 (the backend's
stub is built against numpy 1.x). Made once from pyproject.toml's pins, cached under
~/.cache/edgevision/triton (EDGEVISION_TRITON_CACHE) per set of pins, built in a temporary folder and renamed
into place under a lock. The environment sees this checkout's edgevision through a .pth file, so a cached
environment always runs the code under test.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from edgevision.errors import BackendError
from edgevision.serve.server import TritonInstall, find_triton

ROOT = Path(__file__).resolve().parents[1]


class Unavailable(Exception):
    """No Triton server environment can be made here (no registry, another platform)."""


@dataclass(frozen=True)
class ServerEnv:
    python: Path
    install: TritonInstall


def pins(extra: str = "triton-server") -> list[str]:
    """The extra's requirements from pyproject.toml, edgevision[...] expanded."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    out: list[str] = []
    for req in extras[extra]:
        if req.startswith("edgevision["):
            for inner in req[len("edgevision["):-1].split(","):
                out += pins(inner)
        else:
            out.append(req)
    return out


def environment() -> ServerEnv:
    if not sys.platform.startswith("linux") or os.uname().machine != "x86_64":
        raise Unavailable("nvidia-pytriton publishes tritonserver for x86-64 Linux only")
    wanted = sorted(pins())
    cache = Path(os.environ.get("EDGEVISION_TRITON_CACHE", Path.home() / ".cache" / "edgevision" / "triton"))
    home = cache / ("env-" + hashlib.sha256("\n".join(wanted).encode()).hexdigest()[:12])
    cache.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(cache / "build.lock")):
        if not (home / "ready").is_file():
            _build(home, wanted)
    python = home / "bin" / "python"
    site = next((home / "lib").glob("python3.*/site-packages"))
    (site / "edgevision-checkout.pth").write_text(f"{ROOT}\n")  # this checkout's edgevision, whatever the cache holds
    try:
        return ServerEnv(python, find_triton(site))
    except BackendError as e:
        raise Unavailable(str(e)) from None


def _build(home: Path, wanted: list[str]) -> None:
    work = Path(tempfile.mkdtemp(prefix=home.name + ".", dir=home.parent))
    try:
        subprocess.run([sys.executable, "-m", "venv", str(work)], check=True, capture_output=True, timeout=300)
        done = subprocess.run([str(work / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                               *wanted], capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise Unavailable(f"pip install {' '.join(wanted)} failed: {done.stderr.strip()[-800:]}")
        (work / "ready").write_text("\n".join(wanted) + "\n")
        shutil.rmtree(home, ignore_errors=True)
        work.rename(home)  # a venv's scripts name their folder: they are not used, `python` is (by path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
