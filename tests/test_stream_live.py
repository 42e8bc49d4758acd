"""Live sources (issue 17): a real MJPEG-over-HTTP server on 127.0.0.1 (tests/videos.py) serving
frames faster than the model (or the application) takes them: drop policies, reconnection after the
server goes away and comes back, a clear error when it stays away, and Ctrl-C on `edgevision run`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import pytest

import edgevision
from conftest import default_signals
from edgevision.errors import SourceError
from videos import MjpegServer, decoded

READ = 45  # frames read from the live source per run


@pytest.fixture(scope="module")
def detector(quickstart) -> Path:  # noqa: ANN001
    workdir, first = quickstart
    assert first.returncode == 0, first.stderr[-2000:]
    return workdir / "build" / "quickstart" / "onnxruntime-fp32"


def _slow_run(model, url: str, drop: str) -> tuple[list[int], dict]:  # noqa: ANN001
    """An application that takes 60 ms per frame, behind a 60 fps camera."""
    indices = []
    stream = model.stream(url, drop=drop, buffer=3, in_flight=1, max_frames=READ, timeout=5)
    for frame in stream:
        indices.append(frame.index)
        time.sleep(0.06)
    return indices, stream.stats()


def test_live_source_drops_by_policy(detector: Path) -> None:
    waits = {}
    with MjpegServer(fps=60) as server, edgevision.load(detector) as model:
        for drop in ("oldest", "newest", "none"):
            indices, stats = _slow_run(model, server.url, drop)
            source = stats["sources"][0]
            assert source["read"] == READ and source["live"] and source["kind"] == "network"
            assert indices == sorted(set(indices)), indices  # in order, each once
            assert source["inferred"] + source["dropped"] == READ  # every frame read is accounted for
            assert stats["dropped"] == source["dropped"]
            if drop == "none":
                assert indices == list(range(READ)) and source["dropped"] == 0
            else:
                assert source["dropped"] >= READ // 3, (drop, source)
                assert len(indices) < READ and indices[-1] >= READ - 4  # skipped ahead, reached the end
            waits[drop] = stats["stages_ms"]["wait"]["p50"]
    # dropping the oldest keeps the freshest frames: they wait far less than the ones kept by dropping the newest
    assert waits["newest"] > 1.5 * waits["oldest"], waits
    assert waits["none"] > waits["oldest"], waits


def test_live_source_reconnects_then_fails_clearly(detector: Path) -> None:
    events: list[str] = []
    seen = 0
    with MjpegServer(fps=30) as server, edgevision.load(detector) as model:
        stream = model.stream(server.url, reconnect=4, backoff=0.2, timeout=1.0, on_event=events.append)
        with pytest.raises(SourceError) as failure:
            for _ in stream:
                seen += 1
                if seen == 20:  # the camera goes away, and comes back 0.6 s later
                    server.stop()
                    threading.Timer(0.6, server.start).start()
                elif seen == 40:  # it goes away for good
                    server.stop()
                    gone = time.monotonic()
        elapsed = time.monotonic() - gone
    message = str(failure.value)
    assert server.url in message and "4 reconnect attempts failed" in message
    assert elapsed < 15, f"gave up after {elapsed:.1f} s"  # bounded: 0.2 + 0.4 + 0.8 + 1.6 s of back-off, fast refusals
    source = stream.stats()["sources"][0]
    assert source["reconnects"] == 1 and seen >= 40
    assert any("reconnecting in 0.2 s (attempt 1/4)" in e for e in events)
    assert any(e.endswith("reconnected") for e in events)


def test_ctrl_c_finalises_the_video(detector: Path, tmp_path: Path) -> None:
    out, log = tmp_path / "live.mp4", tmp_path / "live.jsonl"
    with MjpegServer(fps=30) as server:
        proc = subprocess.Popen([sys.executable, "-m", "edgevision", "run", str(detector), "--source", server.url,
                                 "--save", str(out), "--jsonl", str(log)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, preexec_fn=default_signals)  # as a terminal
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not log.exists() or log.read_text().count("\n") < 15):
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode in (130, -signal.SIGINT), (proc.returncode, stderr[-2000:])
    assert "Traceback" not in stderr and "interrupted" in stderr
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    records, stats = lines[:-1], lines[-1]["stats"]
    assert stats["interrupted"] is True and stats["frames"] == len(records) >= 15
    video = decoded(out)  # finalised: it opens and holds every frame that was written
    assert len(video) == len(records) and video[0].shape == (240, 320, 3)
    assert cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FRAME_COUNT) == len(records)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.jsonl", "live.mp4"]
    assert "frames in" in stdout
