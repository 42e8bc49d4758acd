"""Start a real Triton Inference Server on a repository (`edgevision serve`, the tests, the load benchmark).

Where `tritonserver` comes from, first found:
- `home`: a folder with bin/tritonserver and backends/ (NVIDIA's container: /opt/tritonserver), or one with
  pytriton/tritonserver inside (a site-packages folder, or the nvidia-pytriton wheel unpacked);
- the installed `nvidia-pytriton` package (`pip install --no-deps nvidia-pytriton==0.7.0`: it bundles
  tritonserver 2.51 with the Python backend only; its numpy<2 pin is for its own Python API, which edgevision
  does not use);
- `tritonserver` on PATH, with /opt/tritonserver/backends.
The Python backend runs models with the Python that runs this process (its stub for this Python version).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, List, Optional, Sequence

from edgevision.errors import BackendError

STARTUP_SECONDS = 120.0


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    backends: Path  # holds python/ (libtriton_python.so, triton_python_backend_utils.py)
    stub: Optional[Path]  # triton_python_backend_stub for this Python, when the install ships several
    libs: Optional[Path]  # shared libraries the binary needs (the wheel's nvidia_pytriton.libs)


def find_triton(home: Optional[Path] = None) -> TritonInstall:
    candidates: List[Path] = [Path(home)] if home else []
    if not home:
        spec = importlib.util.find_spec("pytriton")  # not imported: its Python API needs numpy < 2
        if spec is not None and spec.origin:
            candidates.append(Path(spec.origin).parent.parent)
        on_path = shutil.which("tritonserver")
        if on_path:
            candidates.append(Path(on_path).resolve().parent.parent)
    for root in candidates:
        found = _install_at(root)
        if found is not None:
            return found
    where = f"in {home}" if home else "(no --triton-home, no nvidia-pytriton package, no tritonserver on PATH)"
    raise BackendError(f"no Triton Inference Server found {where}: run inside NVIDIA's tritonserver container, or "
                       "pip install --no-deps nvidia-pytriton==0.7.0 (tritonserver with the Python backend)")


def _install_at(root: Path) -> Optional[TritonInstall]:
    if (root / "bin" / "tritonserver").is_file() and (root / "backends").is_dir():
        return TritonInstall(root / "bin" / "tritonserver", root / "backends", None, None)
    dist = root / "pytriton" / "tritonserver"
    if (dist / "bin" / "tritonserver").is_file():
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise BackendError(f"{dist}: no Python backend stub for Python {version}")
        return TritonInstall(dist / "bin" / "tritonserver", dist / "backends", stub, root / "nvidia_pytriton.libs")
    return None


def backend_of(config: Any) -> str:
    """The Triton backend a model configuration needs (platform names map onto backends)."""
    platforms = {"onnxruntime_onnx": "onnxruntime", "tensorrt_plan": "tensorrt", "openvino": "openvino"}
    return config.backend or platforms.get(config.platform, config.platform)


def has_backend(install: TritonInstall, backend: str) -> bool:
    return (install.backends / backend).is_dir()


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TritonServer:
    """A tritonserver process on 127.0.0.1 (or `host`), stopped on exit from the `with` block."""

    def __init__(self, repositories: Sequence[Path], install: TritonInstall, *, models: Optional[Sequence[str]] = None,
                 http_port: int = 0, grpc_port: int = 0, host: str = "127.0.0.1", log: Optional[IO[Any]] = None,
                 verbose: bool = False, python: Optional[Path] = None) -> None:
        self.python = Path(python or sys.executable)  # its environment runs the Python-backend models
        self.repositories = [Path(r).resolve() for r in repositories]
        self.models = None if models is None else list(models)  # None: every model in the repositories
        self.install = install
        self.host = host
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.log = log
        self.verbose = verbose
        self.process: Optional[subprocess.Popen] = None
        self._work: Optional[Path] = None

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.host}:{self.grpc_port}"

    def start(self, timeout: float = STARTUP_SECONDS) -> "TritonServer":
        for port, flag in ((self.http_port, "--http-port"), (self.grpc_port, "--grpc-port")):
            if not _port_free(self.host, port):
                raise BackendError(f"port {port} on {self.host} is in use (another server?); choose another {flag}")
        backends = self._backends()
        env = dict(os.environ)
        env["PATH"] = f"{self.python.parent}{os.pathsep}{env.get('PATH', '')}"  # the stub runs the python found first
        if self.install.libs is not None:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(self.install.libs), env.get("LD_LIBRARY_PATH")) if p)
        command = [str(self.install.binary), *(f"--model-repository={r}" for r in self.repositories),
                   f"--backend-directory={backends}",
                   f"--http-address={self.host}", f"--http-port={self.http_port}", f"--grpc-address={self.host}",
                   f"--grpc-port={self.grpc_port}", "--allow-metrics=false", "--exit-on-error=true",
                   "--exit-timeout-secs=5",
                   f"--log-verbose={1 if self.verbose else 0}"]
        if self.models is not None:  # only these: explicit model control
            command += ["--model-control-mode=explicit", *(f"--load-model={m}" for m in self.models)]
        self.process = subprocess.Popen(command, env=env, stdout=self.log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                        start_new_session=True)  # Ctrl-C in a terminal reaches us, and we stop it
        try:
            self._wait_ready(timeout)
        except BaseException:  # Ctrl-C or SIGTERM while it loads: never leave it running
            self.stop()
            raise
        return self

    def _backends(self) -> Path:
        if self.install.stub is None:
            return self.install.backends
        self._work = Path(tempfile.mkdtemp(prefix="edgevision-triton-"))
        python = self._work / "python"
        python.mkdir()
        for item in (self.install.backends / "python").iterdir():
            if item.is_file():
                (python / item.name).symlink_to(item)
        shutil.copy(self.install.stub, python / "triton_python_backend_stub")
        return self._work

    def _wait_ready(self, timeout: float) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                code = self.process.returncode
                self.stop()
                raise BackendError(f"tritonserver exited with code {code} while loading {self._where} "
                                   "(its log says why: edgevision serve --verbose)")
            try:
                with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise BackendError(f"tritonserver did not become ready within {timeout:.0f} s on {self._where}")

    @property
    def _where(self) -> str:
        return ", ".join(map(str, self.repositories))

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None

    def __enter__(self) -> "TritonServer":
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
