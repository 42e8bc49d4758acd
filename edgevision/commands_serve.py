"""`edgevision export triton` and `edgevision serve` (registered by commands.py)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import List, Optional

import typer

export = typer.Typer(no_args_is_help=True, help="Write an artifact in another deployment's layout.")


@export.command("triton")
def export_triton(
    artifact: Path = typer.Argument(..., help="Artifact folder."),
    out: Path = typer.Option(..., "--out", help="The Triton model repository to write (replaces only one that "
                             "edgevision wrote, or an empty folder)."),
    variant: Optional[List[str]] = typer.Option(None, "--variant", help="Variant to serve; repeat for several "
                                                "(default: every passed variant)."),
    engine: str = typer.Option("native", help="Also serve each variant's graph: 'native' (Triton's onnxruntime / "
                               "openvino / tensorrt backends), 'python' (edgevision's runner on the Python backend), "
                               "or 'none'."),
    instances: int = typer.Option(1, min=1, help="Model instances per model (instance_group count)."),
    max_batch: int = typer.Option(8, "--max-batch", min=1, help="Pipeline models: requests per batch."),
    queue_delay_us: int = typer.Option(0, "--queue-delay-us", min=0, help="Dynamic batching: how long a request "
                                       "waits for others to join its batch (microseconds; 0: it takes the requests "
                                       "already queued and adds no wait)."),
    dynamic_batching: bool = typer.Option(True, "--dynamic-batching/--no-dynamic-batching",
                                          help="Let Triton gather requests into batches."),
    threads: Optional[int] = typer.Option(None, min=1, help="Engine threads per instance (default: cores / instances)."),
) -> None:
    """A Triton model repository from an artifact: per variant, a pipeline model (images in, results out,
    edgevision's runtime on Triton's Python backend) and an engine model (the graph)."""
    from edgevision.errors import InputError
    from edgevision.serve.triton_repo import ServeOptions, export_repository

    if engine not in ("native", "python", "none"):
        raise InputError(f"--engine must be native, python or none, got {engine!r}")
    options = ServeOptions(instances=instances, max_batch=max_batch, engine=engine, threads=threads,
                           queue_delay_us=queue_delay_us if dynamic_batching else None)
    report = export_repository(artifact, out, variant, options)
    for model in report.models:
        print(f"{model['name']}: {model['kind']} ({model['backend']}, variant {model['variant']})")
    for skipped in report.skipped:
        print(f"{skipped['name']}: not written: {skipped['why']}")
    print(f"wrote {report.path}; serve it with: edgevision serve {report.path}")


def serve(
    repositories: List[Path] = typer.Argument(..., help="Repositories written by `edgevision export triton`."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface)."),
    http_port: int = typer.Option(8000, "--http-port", min=1, max=65535),
    grpc_port: int = typer.Option(8001, "--grpc-port", min=1, max=65535),
    triton_home: Optional[Path] = typer.Option(None, "--triton-home", help="Where tritonserver is (a folder with "
                                               "bin/tritonserver, or with pytriton/tritonserver); default: the "
                                               "nvidia-pytriton package, then tritonserver on PATH."),
    verbose: bool = typer.Option(False, "--verbose", help="Triton's own log on stderr."),
) -> None:
    """Check Triton repositories' files and configurations, then run tritonserver on them until Ctrl-C (exit 130)
    or SIGTERM (exit 143); the server is stopped either way."""
    from edgevision.errors import BackendError, Terminated
    from edgevision.runtime.interrupts import BetweenFrames
    from edgevision.serve.server import TritonServer, backend_of, find_triton, has_backend
    from edgevision.serve.triton_config import parse
    from edgevision.serve.triton_repo import verify_repository

    install = find_triton(triton_home)
    loadable, missing, skipped = [], [], []
    for repository in repositories:
        index = verify_repository(repository)
        skipped += index.get("skipped", [])
        for model in index["models"]:
            backend = backend_of(parse(repository / model["name"] / "config.pbtxt"))
            (loadable if has_backend(install, backend) else missing).append((model, backend))
    if not loadable:
        raise BackendError(f"{install.binary}: none of the repository's models can load there (it has no "
                           f"{', '.join(sorted({b for _, b in missing}))} backend)")
    log = tempfile.NamedTemporaryFile(prefix="tritonserver-", suffix=".log", delete=False)
    server = TritonServer(repositories, install, models=[m["name"] for m, _ in loadable], http_port=http_port,
                          grpc_port=grpc_port, host=host, log=sys.stderr if verbose else log, verbose=verbose)
    # Ctrl-C and SIGTERM (docker stop, systemd), while it loads or serves, stop the server too: exit 130 / 143
    with BetweenFrames(), log:
        try:
            try:
                server.start()
            except BackendError as e:
                raise BackendError(f"{e}; its log: {log.name}") from None
            for model, _ in loadable:
                print(f"serving {model['name']} ({model['kind']}): {server.grpc_url}/{model['name']}  "
                      f"{server.http_url}/{model['name']}")
            for model, backend in missing:
                print(f"not loaded: {model['name']}: this tritonserver has no {backend} backend (NVIDIA's container has it)")
            for entry in skipped:
                print(f"not in the repository: {entry['name']}: {entry['why']}")
            print(f"tritonserver {install.binary} is ready; its log: {'stderr' if verbose else log.name}; Ctrl-C stops it",
                  flush=True)
            code = server.process.wait() if server.process is not None else 0
            raise BackendError(f"tritonserver exited by itself with code {code}; its log: {log.name}")
        except Terminated:  # typer turns every KeyboardInterrupt into 130; SIGTERM's is 143
            raise typer.Exit(143) from None
        finally:
            server.stop()
