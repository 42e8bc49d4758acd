"""Serving from Triton: repositories written by `edgevision export triton`, a real tritonserver started by
`edgevision serve` (tests/triton_server.py makes its environment), and edgevision.load("grpc://...") /
("http://...") answering what the same artifact answers in process.

Triton's native onnxruntime / openvino / tensorrt backends come only in NVIDIA's containers: their configs are
checked against Triton's schema and the graph here, and `edgevision serve` leaves them unloaded (it says so);
the engine-kind client is served by edgevision's runner on the Python backend (--engine python).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import matplotlib
import numpy as np
import pytest
from PIL import Image

import edgevision
from edgevision.data import ShapesDataset
from edgevision.errors import ArtifactError, InputError, OutputError, ServerError
from edgevision.serve import triton_config as tc
from edgevision.serve.server import free_port
from edgevision.serve.triton_repo import ServeOptions, export_repository, verify_repository

from triton_server import Unavailable, environment

SAMPLES = Path(matplotlib.get_data_path()) / "sample_data"

# -- the repository, without a server ---------------------------------------------------------------------------

def test_repository_configs_follow_the_graph_and_triton_schema(classifier_artifact, tmp_path: Path) -> None:  # noqa: ANN001
    _, artifact = classifier_artifact
    report = export_repository(artifact, tmp_path / "repo", None, ServeOptions(instances=2, max_batch=4))
    names = {m["name"]: m for m in report.models}
    assert set(names) == {"mnv3_backends-onnxruntime-fp32", "mnv3_backends-onnxruntime-fp32-engine",
                          "mnv3_backends-openvino-fp32", "mnv3_backends-openvino-fp32-engine",
                          "mnv3_backends-ncnn-fp32", "mnv3_backends-ncnn-fp16"}
    assert {s["name"] for s in report.skipped} == {"mnv3_backends-ncnn-fp32-engine", "mnv3_backends-ncnn-fp16-engine"}
    assert all("no ncnn backend" in s["why"] for s in report.skipped)
    repo = tmp_path / "repo"
    ort = tc.parse(repo / "mnv3_backends-onnxruntime-fp32-engine" / "config.pbtxt")
    assert ort.platform == "onnxruntime_onnx" and ort.max_batch_size == 64  # the artifact's batch limit
    assert [(i.name, list(i.dims)) for i in ort.input] == [("images", [3, 64, 64])]
    assert [(o.name, list(o.dims)) for o in ort.output] == [("logits", [3])]
    assert ort.instance_group[0].count == 2 and ort.HasField("dynamic_batching")
    assert (repo / "mnv3_backends-onnxruntime-fp32-engine" / "1" / "model.onnx").is_file()
    ov = tc.parse(repo / "mnv3_backends-openvino-fp32-engine" / "config.pbtxt")
    assert ov.backend == "openvino" and [o.name for o in ov.output] == ["logits"]  # full lists: no auto-complete
    assert {p.name for p in (repo / "mnv3_backends-openvino-fp32-engine" / "1").iterdir()} == {"model.xml", "model.bin"}
    pipe = tc.parse(repo / "mnv3_backends-ncnn-fp16" / "config.pbtxt")
    assert pipe.backend == "python" and pipe.max_batch_size == 64 and [i.name for i in pipe.input] == ["image", "frame"]
    assert [(o.name, list(o.dims)) for o in pipe.output] == [("scores", [3])]
    assert tc.model_info(pipe, "x").labels == ("circle", "square", "triangle")
    assert (repo / "mnv3_backends-ncnn-fp16" / "labels.txt").read_text().split() == ["circle", "square", "triangle"]
    assert len(verify_repository(repo)["models"]) == 6


def test_repository_is_checked_and_replaces_only_its_own(classifier_artifact, tmp_path: Path) -> None:  # noqa: ANN001
    _, artifact = classifier_artifact
    repo = tmp_path / "repo"
    export_repository(artifact, repo, ["onnxruntime-fp32"], ServeOptions(engine="none", queue_delay_us=None))
    assert not tc.parse(repo / "mnv3_backends-onnxruntime-fp32" / "config.pbtxt").HasField("dynamic_batching")
    model_py = repo / "mnv3_backends-onnxruntime-fp32" / "1" / "model.py"
    model_py.write_text(model_py.read_text() + "\n# edited\n")
    with pytest.raises(ArtifactError, match="model.py"):
        verify_repository(repo)
    export_repository(artifact, repo, ["onnxruntime-fp32"], ServeOptions(engine="none"))  # its own: replaced whole
    assert verify_repository(repo)["models"][0]["name"] == "mnv3_backends-onnxruntime-fp32"
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="other files"):
        export_repository(artifact, theirs, None, ServeOptions())
    assert [p.name for p in theirs.iterdir()] == ["notes.txt"]
    with pytest.raises(OutputError, match="inside the artifact"):
        export_repository(artifact, artifact / "triton", None, ServeOptions())
    assert not (artifact / "triton").exists()
    with pytest.raises(ArtifactError, match="no variant 'tensorrt-fp16'"):
        export_repository(artifact, tmp_path / "new", ["tensorrt-fp16"], ServeOptions())
    assert not (tmp_path / "new").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["repo", "theirs"]
    config = tc.schema().ModelConfig(name="foreign", backend="python")
    with pytest.raises(ArtifactError, match="not an edgevision model"):
        tc.model_info(config, "grpc://h:1/foreign")


def test_remote_errors_name_the_server_and_the_model() -> None:
    url = f"grpc://127.0.0.1:{free_port()}/quickstart-onnxruntime-fp32"
    t0 = time.monotonic()
    with pytest.raises(ServerError, match=r"127\.0\.0\.1:\d+/quickstart-onnxruntime-fp32: cannot reach the server"):
        edgevision.load(url, retries=2, backoff=0.05)
    assert time.monotonic() - t0 >= 0.05 + 0.1  # it waited between its attempts
    with pytest.raises(InputError, match="grpc://HOST:PORT/MODEL"):
        edgevision.load("grpc://127.0.0.1:8001/")


# -- a real server ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server_env() -> Any:
    try:
        return environment()
    except Unavailable as e:
        pytest.skip(f"no Triton server environment here: {e}")


@pytest.fixture(scope="module")
def served(server_env, detector, unet_artifact, classifier_artifact, maskrcnn_artifact, tmp_path_factory  # noqa: ANN001
           ) -> Iterator[dict]:
    """`edgevision serve` on four repositories (a detector with its engine model on the Python backend, a
    segmenter, a classifier, Mask R-CNN), run as a user runs it, in the server's environment; stopped with Ctrl-C."""
    root = tmp_path_factory.mktemp("triton")
    repos = [root / "det", root / "seg", root / "cls", root / "masks"]
    export_repository(detector, repos[0], ["onnxruntime-fp32", "openvino-fp32"], ServeOptions(engine="python", threads=1))
    export_repository(unet_artifact[1], repos[1], ["onnxruntime-fp32"], ServeOptions(threads=1))
    export_repository(classifier_artifact[1], repos[2], ["openvino-fp32"], ServeOptions(threads=1))
    export_repository(maskrcnn_artifact[1], repos[3], ["onnxruntime-fp32"], ServeOptions(engine="none", threads=1))
    http, grpc = free_port(), free_port()
    home = server_env.install.binary.parents[3]
    process = subprocess.Popen([str(server_env.python), "-m", "edgevision", "serve", *map(str, repos), "--http-port",
                                str(http), "--grpc-port", str(grpc), "--triton-home", str(home)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = _until_ready(process)
    yield {"http": f"http://127.0.0.1:{http}", "grpc": f"grpc://127.0.0.1:{grpc}", "lines": lines, "process": process,
           "root": root,
           "artifacts": {"det": detector, "seg": unet_artifact[1], "cls": classifier_artifact[1],
                         "masks": maskrcnn_artifact[1]}}
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        process.wait(60)


def _until_ready(process: subprocess.Popen) -> list[str]:
    lines: list[str] = []
    done = threading.Event()

    def read() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if "is ready" in line:
                done.set()
        done.set()

    threading.Thread(target=read, daemon=True).start()
    if not done.wait(300) or process.poll() is not None:
        process.kill()
        raise AssertionError(f"edgevision serve did not come up: {''.join(lines)} {process.stderr.read()[-3000:]}")  # type: ignore[union-attr]
    return lines


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("photos")
    for i in range(2):
        Image.fromarray(ShapesDataset(count=1, size=(240, 320), seed=5 + i, max_objects=3)[0].image).save(folder / f"s{i}.png")
    shutil.copy(SAMPLES / "grace_hopper.jpg", folder)
    return sorted(str(p) for p in folder.iterdir())


def _same(local: Any, remote: Any) -> int:
    """Asserts that two results agree; returns how much they held (detections, classes present, classes)."""
    if isinstance(local, edgevision.Detections):
        assert len(local) == len(remote) and np.array_equal(local.class_ids, remote.class_ids)
        np.testing.assert_allclose(remote.boxes, local.boxes, atol=0.05)
        np.testing.assert_allclose(remote.scores, local.scores, atol=1e-4)
        return len(local)
    if isinstance(local, edgevision.Segmentation):
        assert local.shape == remote.shape and (local.label_map == remote.label_map).mean() > 0.999
        return len(np.unique(local.label_map))
    assert list(local.class_ids) == list(remote.class_ids) and local.names == remote.names
    np.testing.assert_allclose(remote.scores, local.scores, atol=1e-5)
    return len(local)


CASES = [("det", "quickstart-onnxruntime-fp32", "onnxruntime-fp32"), ("det", "quickstart-openvino-fp32", "openvino-fp32"),
         ("seg", "unet-onnxruntime-fp32", "onnxruntime-fp32"), ("cls", "mnv3_backends-openvino-fp32", "openvino-fp32")]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_served_results_equal_in_process_predict(served, photos, protocol: str) -> None:  # noqa: ANN001
    held = {}
    for kind, model, variant in CASES:
        with edgevision.load(served["artifacts"][kind], variant) as local, edgevision.load(f"{served[protocol]}/{model}") as remote:
            assert remote.task == local.task and remote.labels == local.labels
            held[model] = sum(_same(local.predict(p), remote.predict(p)) for p in photos)  # files: sent encoded
            frames = [np.asarray(Image.open(p).convert("RGB")) for p in photos]
            for lo, re in zip(local.predict(frames), remote.predict(frames)):  # arrays: raw frames, concurrently
                _same(lo, re)
            bgr = np.ascontiguousarray(frames[0][:, :, ::-1])
            _same(local.predict(bgr, channel_order="bgr"), remote.predict(bgr, channel_order="bgr"))
    assert held["quickstart-onnxruntime-fp32"] >= 3 and held["unet-onnxruntime-fp32"] >= 2 * len(photos)
    assert "not loaded: quickstart-openvino-fp32-engine" not in "".join(served["lines"])  # python engine: loaded


def test_served_instance_masks_equal_in_process_masks(served, photos) -> None:  # noqa: ANN001
    with edgevision.load(served["artifacts"]["masks"], "onnxruntime-fp32") as local, \
            edgevision.load(f"{served['grpc']}/maskrcnn-onnxruntime-fp32") as remote:
        pixels = 0
        for p in photos:
            here, there = local.predict(p), remote.predict(p)
            _same(here, there)
            assert there.masks is not None and there.masks.shape == here.masks.shape
            assert (there.masks != here.masks).sum() <= 1e-3 * here.masks.size  # up to pixels on a 0.5 boundary
            pixels += int(here.masks.sum())
            assert len(there[:2].masks) == min(2, len(here))  # indexing keeps the served masks
        assert pixels > 0


def test_engine_model_runs_the_graph_remotely_with_local_pre_and_post_processing(served, photos) -> None:  # noqa: ANN001
    with edgevision.load(served["artifacts"]["det"], "onnxruntime-fp32") as local, \
            edgevision.load(f"{served['grpc']}/quickstart-onnxruntime-fp32-engine") as remote:
        assert isinstance(remote, edgevision.Predictor) and type(remote.runner).__name__ == "TritonRunner"
        assert sum(_same(local.predict(p), remote.predict(p)) for p in photos) >= 3
        both = remote.predict(photos[:2])  # two images in one graph batch
        assert [len(d) for d in both] == [len(local.predict(p)) for p in photos[:2]]


def test_concurrent_clients_get_their_own_answers(served, photos) -> None:  # noqa: ANN001
    with edgevision.load(served["artifacts"]["det"], "onnxruntime-fp32") as local:
        expected = [local.predict(p) for p in photos]
    url = f"{served['grpc']}/quickstart-onnxruntime-fp32"

    def client(seed: int) -> int:
        order = np.random.default_rng(seed).permutation(len(photos) * 3) % len(photos)
        with edgevision.load(url) as remote:
            return sum(_same(expected[i], remote.predict(photos[i])) >= 0 for i in order)

    with ThreadPoolExecutor(6) as pool:
        assert sum(pool.map(client, range(6))) == 6 * 3 * len(photos)


def test_stream_through_the_server_gives_the_local_results(served, photos, tmp_path: Path) -> None:  # noqa: ANN001
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, p in enumerate(photos):
        shutil.copy(p, folder / f"{i:03d}{Path(p).suffix}")
    with edgevision.load(served["artifacts"]["det"], "onnxruntime-fp32") as local, \
            edgevision.load(f"{served['grpc']}/quickstart-onnxruntime-fp32") as remote:
        here = [f.result for f in local.stream(str(folder))]
        there = [f.result for f in remote.stream(str(folder), in_flight=3)]
    assert len(here) == len(there) == len(photos)
    assert sum(_same(a, b) for a, b in zip(here, there)) >= 3


def test_bad_requests_get_an_error_naming_the_input_and_the_server_stays_up(served, photos, tmp_path: Path) -> None:  # noqa: ANN001
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    model = "quickstart-onnxruntime-fp32"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg at all")
    with edgevision.load(f"{served['grpc']}/{model}") as remote:
        with pytest.raises(ServerError, match=rf"{model}: the server refused inference: .*input 'image'"):
            remote.predict(str(broken))
        with pytest.raises(ServerError, match="input 'frame': 320x240 is over the limit of 1000 pixels"):
            remote.predict(np.zeros((240, 320, 3), np.uint8), max_pixels=1000)
        client = httpclient.InferenceServerClient(served["http"].split("//")[1])
        wrong = httpclient.InferInput("frame", [1, 8, 8, 3], "FP32")
        wrong.set_data_from_numpy(np.zeros((1, 8, 8, 3), np.float32))
        with pytest.raises(InferenceServerException, match="frame"):
            client.infer(model, [wrong])
        flat = httpclient.InferInput("frame", [1, 8, 24], "UINT8")
        flat.set_data_from_numpy(np.zeros((1, 8, 24), np.uint8))
        with pytest.raises(InferenceServerException, match="frame"):
            client.infer(model, [flat])
        client.close()
        with pytest.raises(ServerError, match="not ready on the server.*ready models: .*quickstart-onnxruntime-fp32"):
            edgevision.load(f"{served['grpc']}/no-such-model")
        assert len(remote.predict(photos[0])) == len(edgevision.load(served["artifacts"]["det"], "onnxruntime-fp32").predict(photos[0]))


def test_cli_predict_and_run_switch_to_the_server_by_one_string(served, photos, tmp_path: Path) -> None:  # noqa: ANN001
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, p in enumerate(photos):
        shutil.copy(p, folder / f"{i:03d}{Path(p).suffix}")

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "edgevision", *args], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def labels(lines: list[dict]) -> list[list[str]]:
        return [[d["label"] for d in line["detections"]] for line in lines]

    local_target, remote_target = str(served["artifacts"]["det"] / "onnxruntime-fp32"), f"{served['http']}/quickstart-onnxruntime-fp32"
    local = [json.loads(line) for line in cli("predict", local_target, *photos, "--json").splitlines()]
    remote = [json.loads(line) for line in cli("predict", remote_target, *photos, "--json").splitlines()]
    assert labels(local) == labels(remote) and sum(map(len, labels(local))) >= 3
    for name, target in (("local", local_target), ("remote", remote_target)):
        cli("run", target, "--source", str(folder), "--jsonl", str(tmp_path / f"{name}.jsonl"))
    frames = {name: [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()
                     if "detections" in line] for name in ("local", "remote")}
    assert len(frames["local"]) == len(photos) and labels(frames["local"]) == labels(frames["remote"])


def _tritonservers(repository: Path) -> list[int]:
    """The tritonserver processes serving this repository (from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "tritonserver" in cmdline and str(repository.resolve()) in cmdline:
            pids.append(int(entry.name))
    return pids


def test_serve_stops_the_server_on_sigterm_with_143(server_env, served, tmp_path: Path) -> None:  # noqa: ANN001
    repo = tmp_path / "cls"
    export_repository(served["artifacts"]["cls"], repo, ["openvino-fp32"], ServeOptions(engine="none", threads=1))
    process = subprocess.Popen([str(server_env.python), "-m", "edgevision", "serve", str(repo), "--http-port",
                                str(free_port()), "--grpc-port", str(free_port()), "--triton-home",
                                str(server_env.install.binary.parents[3])], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    _until_ready(process)
    assert len(_tritonservers(repo)) == 1
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 143 and "terminated" in process.stderr.read()  # type: ignore[union-attr]
    assert _tritonservers(repo) == []  # stopped with it, not orphaned


def test_serve_stops_on_ctrl_c_with_130(served) -> None:  # noqa: ANN001  (last: it stops the module's server)
    process = served["process"]
    assert process.poll() is None
    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 130
    assert [pid for repo in ("det", "seg") for pid in _tritonservers(served["root"] / repo)] == []
