"""Inputs that used to end in a traceback, unbounded memory or an all-or-nothing failure (issue 26,
items 8-12): each is now one clear line, bounded, and the good inputs beside it still get results."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

import edgevision
from edgevision.errors import InputError, ModelSourceError
from edgevision.runtime.images import read_image
from videos import MjpegServer, jpeg_frames, shapes_frames


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A small PNG whose header declares width x height (grey, 8-bit): a decompression bomb, a few KB of
    zlib stream that inflates to width x height bytes of zeros (only its first rows are stored)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = zlib.compress(b"\x00" * (width + 1) * min(height, 64), 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgevision", *args], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    for w, h in [(60000, 60000), (20000, 20000), (12000, 8000)]:
        shown = f"{w}x{h} is .* megapixels" if w * h < 179e6 else "declares more than 179 megapixels .Pillow's hard limit."
        with pytest.raises(InputError, match=f"{shown}, over the limit of 64 .max_pixels"):
            read_image(png_declaring(tmp_path / f"{w}.png", w, h))
    small = cv2.imwrite(str(tmp_path / "small.png"), shapes_frames(1)[0]) and tmp_path / "small.png"
    assert read_image(small).shape == (240, 320, 3)
    with pytest.raises(InputError, match="over the limit of 0.05"):  # the limit is the caller's to set
        read_image(small, max_pixels=50_000)
    # the peak resident memory of a fresh process (VmHWM: ru_maxrss would count the forked parent's pages)
    probe = ("import sys\nfrom pathlib import Path\nfrom edgevision.runtime.images import read_image\n"
             "from edgevision.errors import InputError\ntry:\n    read_image(Path(sys.argv[1]))\nexcept InputError as e:\n"
             "    print(e)\nprint(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))\n")
    done = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "12000.png")], capture_output=True, text=True,
                          timeout=120)
    message, peak_kb = done.stdout.splitlines()
    assert "over the limit" in message and int(peak_kb) < 400_000, done.stdout  # 12000x8000 RGB alone is 288 MB


def test_predict_answers_every_readable_image_and_one_line_per_unreadable(detector: Path, tmp_path: Path) -> None:
    good = []
    for i, frame in enumerate(shapes_frames(3)):
        cv2.imwrite(str(tmp_path / f"g{i}.png"), frame)
        good.append(tmp_path / f"g{i}.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    bomb = png_declaring(tmp_path / "bomb.png", 60000, 60000)
    files = [good[0], tmp_path / "broken.jpg", good[1], tmp_path / "loop.png", tmp_path / "dangling.png", bomb, good[2],
             tmp_path / "missing.png"]
    done = _cli("predict", str(detector / "onnxruntime-fp32"), *map(str, files), "--json")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["image"] for r in results] == [str(p) for p in good] and all(r["detections"] for r in results)
    errors = done.stderr.strip().splitlines()
    for fragment in ("not a readable image file: " + str(tmp_path / "broken.jpg"), "a loop of symbolic links",
                     "a symbolic link to " + str(tmp_path / "nowhere.png") + ", which does not exist",
                     "bomb.png: declares more than 179 megapixels", "image not found: " + str(tmp_path / "missing.png"),
                     "5 of 8 image(s) could not be predicted"):
        assert any(fragment in e for e in errors), (fragment, errors)
    assert len(errors) == 6


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file: permissions cannot be denied to it")
def test_a_file_without_read_permission_says_so(tmp_path: Path) -> None:
    path = tmp_path / "secret.png"
    cv2.imwrite(str(path), shapes_frames(1)[0])
    path.chmod(0)
    with pytest.raises(InputError, match="permission denied"):
        read_image(path)


def test_run_on_a_folder_skips_unreadable_files_with_a_line_each(detector: Path, tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(shapes_frames(4)):
        cv2.imwrite(str(folder / f"{i}.png"), frame)
    (folder / "2b.jpg").write_bytes(b"broken")
    png_declaring(folder / "3b.png", 60000, 60000)
    rgb = shapes_frames(1, seed=9)[0][..., ::-1]
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(rgb)).save(folder / "4.gif")  # gifs are images too, as for predict
    done = _cli("run", str(detector / "onnxruntime-fp32"), "-s", str(folder), "--jsonl", str(tmp_path / "log.jsonl"))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(records) == 6 and records[-1]["stats"]["sources"][0]["unreadable"] == 2  # 5 frames, then the stats
    assert "skipped 2b.jpg" in done.stderr and "skipped 3b.png" in done.stderr and "OpenCV" not in done.stderr
    assert "2 image file(s) could not be read and were skipped" in done.stderr


@pytest.mark.parametrize("backend", ["onnxruntime-fp32", "openvino-fp32"])
def test_predict_after_close_is_the_same_clear_error_on_every_backend(detector: Path, backend: str) -> None:
    model = edgevision.load(detector / backend)
    image = shapes_frames(1)[0]
    assert len(model.predict(image)) >= 1
    model.close()
    model.close()  # twice is fine
    for call in (lambda: model.predict(image), lambda: model.stream(0)):
        with pytest.raises(InputError, match=f"predictor {backend} is closed; open the artifact again"):
            call()


def test_ultralytics_yaml_that_is_no_model_and_unknown_heads(tmp_path: Path) -> None:
    from edgevision.models.sources import build_model
    from edgevision.recipe import ModelSpec

    not_a_model = tmp_path / "data.yaml"
    not_a_model.write_text("path: /data\nnames: {0: a}\n")
    with pytest.raises(ModelSourceError, match="not an Ultralytics model YAML .it needs 'backbone'"):
        build_model(ModelSpec(source=f"ultralytics:{not_a_model}", labels=["a"]))
    with pytest.raises(ModelSourceError) as e:  # a task edgevision has none for, named (never "'None' model")
        build_model(ModelSpec(source="ultralytics:yolo26n-depth.yaml", labels=["a", "b"]))
    assert "an Ultralytics 'depth' model; edgevision compiles Ultralytics classify" in str(e.value)
    assert "'None'" not in str(e.value)
    head = tmp_path / "odd.yaml"  # a head Ultralytics' task guess does not know: named by its class
    head.write_text("nc: 2\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\nhead:\n  - [-1, 1, nn.Identity, []]\n")
    with pytest.raises(ModelSourceError) as e:
        build_model(ModelSpec(source=f"ultralytics:{head}", labels=["a", "b"]))
    assert "whose head (nn.Identity) edgevision does not know" in str(e.value), str(e.value)


def test_a_source_that_keeps_dropping_is_given_up_on_and_ffmpeg_stays_quiet(detector: Path) -> None:
    """A live source that ends cleanly after every 5 frames was reconnected forever (each reconnect that
    yields frames reset the count): at most --reconnect reconnects within a minute now."""
    with MjpegServer(fps=30, frames=jpeg_frames(5), per_connection=5) as server:
        done = subprocess.run([sys.executable, "-m", "edgevision", "run", str(detector / "onnxruntime-fp32"), "-s",
                               server.url, "--reconnect", "3", "--timeout", "2"], capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "keeps dropping: 3 reconnects within 60 s (at most 3)" in done.stderr, done.stderr[-2000:]
    assert "[http @" not in done.stderr and "[mjpeg @" not in done.stderr, done.stderr[-2000:]  # FFmpeg's own log
