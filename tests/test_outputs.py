"""Nothing of the user's is lost to `edgevision run` / `predict --save` (issue 26, items 2-7), on real
files, real processes, real signals and a real full filesystem (a small tmpfs, where one can be mounted).

The detector is the README's quickstart (conftest.detector), the clip 12 shapes frames."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import cv2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import default_signals
from edgevision.errors import OutputError
from edgevision.runtime.outputs import written_by_edgevision
from edgevision.runtime.video import VideoSink, partial_path
from videos import decoded, shapes_frames, write_clip

N = 12


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", shapes_frames(N))


def _run(detector: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgevision", "run", str(detector / "onnxruntime-fp32"), *args],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def _refused(done: subprocess.CompletedProcess, message: str) -> None:
    assert done.returncode == 1 and "Traceback" not in done.stderr, (done.returncode, done.stderr[-2000:])
    assert message in done.stderr, done.stderr[-2000:]


def _has_user_xattrs(folder: Path) -> bool:
    probe = folder / ".xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


def test_existing_files_are_replaced_only_when_asked_and_only_if_edgevision_wrote_them(
        detector: Path, clip: Path, tmp_path: Path) -> None:
    mine_video, mine_log = tmp_path / "mine.mp4", tmp_path / "mine.jsonl"
    mine_video.write_bytes(b"my holiday video")
    mine_log.write_text("my notes\n")
    for option, target in (("--save", mine_video), ("--jsonl", mine_log), ("--jsonl", Path("/dev/full"))):
        _refused(_run(detector, "-s", str(clip), option, str(target)), "exists; pass --overwrite")
        _refused(_run(detector, "-s", str(clip), option, str(target), "--overwrite"), "is not a file edgevision wrote")
    assert mine_video.read_bytes() == b"my holiday video" and mine_log.read_text() == "my notes\n"

    out, log = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    assert _run(detector, "-s", str(clip), "--save", str(out), "--jsonl", str(log)).returncode == 0
    if not _has_user_xattrs(tmp_path):  # then nothing is ever "ours", which the refusals above already showed
        pytest.skip(f"{tmp_path}: this filesystem keeps no user extended attributes, so --overwrite replaces nothing")
    assert written_by_edgevision(out) and written_by_edgevision(log)
    _refused(_run(detector, "-s", str(clip), "--save", str(out)), "exists; pass --overwrite")
    before = out.stat().st_mtime_ns
    again = _run(detector, "-s", str(clip), "--save", str(out), "--jsonl", str(log), "--overwrite")
    assert again.returncode == 0, again.stderr[-2000:]
    assert out.stat().st_mtime_ns != before and len(decoded(out)) == N and written_by_edgevision(out)
    with log.open("a") as f:  # the user added to edgevision's file: it is theirs now
        f.write("annotated by hand\n")
    _refused(_run(detector, "-s", str(clip), "--jsonl", str(log), "--overwrite"), "or it was changed since")
    assert log.read_text().endswith("annotated by hand\n")


def test_an_output_is_never_a_source(detector: Path, clip: Path, tmp_path: Path) -> None:
    source = tmp_path / "clip.mp4"
    source.write_bytes(clip.read_bytes())
    (tmp_path / "link.mp4").symlink_to(source)
    os.link(source, tmp_path / "hard.mp4")
    (tmp_path / "frames").mkdir()
    cv2.imwrite(str(tmp_path / "frames" / "a.png"), shapes_frames(1)[0])
    original = source.read_bytes()
    for option, target in [("--save", source), ("--jsonl", source), ("--save", tmp_path / "link.mp4"),
                           ("--jsonl", tmp_path / "hard.mp4")]:
        done = _run(detector, "-s", str(source), option, str(target), "--overwrite")
        _refused(done, "which is being read")
    _refused(_run(detector, "-s", str(tmp_path / "frames"), "--save", str(tmp_path / "frames" / "out.mp4")),
             "lies inside the source folder")
    _refused(_run(detector, "-s", str(source), "--save", str(tmp_path / "same.mp4"), "--jsonl", str(tmp_path / "same.mp4")),
             "is also the --save output")
    assert source.read_bytes() == original and not (tmp_path / "same.mp4").exists()


def test_nothing_is_written_inside_an_artifact(detector: Path, clip: Path, tmp_path: Path) -> None:
    files = {p: p.read_bytes() for p in [detector / "manifest.json", detector / "onnxruntime-fp32" / "variant.json",
                                         detector / "onnxruntime-fp32" / "model.onnx"]}
    for option, target in [("--jsonl", detector / "manifest.json"), ("--jsonl", detector / "onnxruntime-fp32" / "variant.json"),
                           ("--save", detector / "x.mp4"), ("--jsonl", detector / "onnxruntime-fp32" / "new.jsonl")]:
        _refused(_run(detector, "-s", str(clip), option, str(target), "--overwrite"), "lies inside the edgevision artifact")
    image = tmp_path / "image.png"
    cv2.imwrite(str(image), shapes_frames(1)[0])
    predict = subprocess.run([sys.executable, "-m", "edgevision", "predict", str(detector / "onnxruntime-fp32"), str(image),
                              "--save", str(detector / "overlays")], capture_output=True, text=True, timeout=300)
    _refused(predict, "lies inside the edgevision artifact")
    assert not (detector / "overlays").exists()  # refused before the folder was made
    assert all(p.read_bytes() == data for p, data in files.items()) and not (detector / "x.mp4").exists()
    inspect = subprocess.run([sys.executable, "-m", "edgevision", "inspect", str(detector)], capture_output=True, text=True,
                             timeout=300)
    assert inspect.returncode == 0, inspect.stderr


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real filesystem that fills up: a 256 KiB tmpfs, where this process may mount one."""
    where = tmp_path / "tiny"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root and mount rights): {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_full_disk_is_an_error_and_leaves_no_broken_video(detector: Path, tiny_disk: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    big = write_clip(tiny_disk.parent / "big.mp4", shapes_frames(40, size=(480, 640)))
    done = _run(detector, "-s", str(big), "--save", str(tiny_disk / "v.mp4"))
    _refused(done, "the disk is full")
    assert list(tiny_disk.iterdir()) == []  # no video, no partial
    # below the free-space check, as when the disk fills mid-video: OpenCV's writer says nothing, the read-back does
    monkeypatch.setattr(VideoSink, "MIN_FREE", 0)
    sink = VideoSink([tiny_disk / "w.mp4"], [25.0])
    for frame in shapes_frames(40, size=(480, 640), seed=8):
        sink.write(0, frame)
    with pytest.raises(OutputError, match="nothing was written there"):
        sink.close()
    assert list(tiny_disk.iterdir()) == []
    (tiny_disk / "filler").write_bytes(bytes(248 * 1024))  # a few KiB left: the log fills them within 40 frames
    done = _run(detector, "-s", str(big), "--jsonl", str(tiny_disk / "log.jsonl"))
    _refused(done, "--jsonl " + str(tiny_disk / "log.jsonl") + ": cannot write (the disk is full)")


def test_sigterm_finalises_like_ctrl_c_and_a_killed_runs_partial_is_cleaned(detector: Path, tmp_path: Path) -> None:
    long_clip = write_clip(tmp_path / "long.mp4", shapes_frames(40) * 25)  # 1,000 frames: still running when signalled
    out, log = tmp_path / "out.mp4", tmp_path / "out.jsonl"

    def start() -> subprocess.Popen:
        log.unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, "-m", "edgevision", "run", str(detector / "onnxruntime-fp32"), "-s",
                                 str(long_clip), "--save", str(out), "--jsonl", str(log), "--overwrite"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_signals)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not log.exists() or log.read_text().count("\n") < 10):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        return proc

    proc = start()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err and "terminated" in err, (proc.returncode, err[-2000:])
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    stats = lines[-1]["stats"]
    assert stats["interrupted"] is True and stats["signal"] == "SIGTERM"
    assert stats["frames"] == len(lines) - 1 == len(decoded(out)) >= 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mp4", "out.jsonl", "out.mp4"]  # no partial left

    proc = start()
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    partial = partial_path(out, proc.pid)
    assert partial.is_file()  # a killed process cleans nothing ...
    short = write_clip(tmp_path / "short.mp4", shapes_frames(3))
    done = _run(detector, "-s", str(short), "--save", str(out), "--overwrite")  # ... the next run to the target does
    # the killed run's log is not edgevision's finished file any more (no stats line, changed): the video still is
    assert done.returncode == 0, done.stderr[-2000:]
    assert not partial.exists() and len(decoded(out)) == 3


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's folder: their files, a source video and folder, an artifact, links to each, one output of ours."""
    from edgevision.runtime.outputs import mark_written

    root = tmp_path_factory.mktemp("tree")
    (root / "notes.txt").write_text("mine")
    (root / "clip.mp4").write_bytes(b"video")
    (root / "frames").mkdir()
    (root / "frames" / "0.png").write_bytes(b"png")
    art = root / "art"
    (art / "onnxruntime-fp32").mkdir(parents=True)
    (art / "manifest.json").write_text(json.dumps({"schema_version": 1, "variants": []}))
    (root / "to-clip.mp4").symlink_to(root / "clip.mp4")
    os.link(root / "clip.mp4", root / "hard-clip.mp4")
    (root / "to-art").symlink_to(art)
    (root / "to-notes").symlink_to(root / "notes.txt")
    (root / "ours.mp4").write_bytes(b"written by edgevision")
    mark_written(root / "ours.mp4")
    return root


_PARTS = ["notes.txt", "clip.mp4", "frames", "0.png", "art", "onnxruntime-fp32", "manifest.json", "to-clip.mp4",
          "hard-clip.mp4", "to-art", "to-notes", "ours.mp4", "new.mp4", "new.jsonl", "..", ".", "missing"]


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(parts=st.lists(st.sampled_from(_PARTS), min_size=1, max_size=4), overwrite=st.booleans())
def test_fuzzed_output_paths_are_refused_or_safe(tree: Path, parts: list, overwrite: bool) -> None:
    """Whatever path is asked for, check_outputs refuses it or it is safe to write: it does not exist, or it is a
    file of ours and overwrite was given; it is no source (by path or inode) and lies in no artifact or source folder."""
    from edgevision.runtime.outputs import check_outputs

    path = tree.joinpath(*parts)
    sources = [tree / "clip.mp4", tree / "frames"]
    try:
        check_outputs({"--jsonl": [path]}, sources, overwrite)
    except OutputError as e:
        assert str(e).startswith(f"--jsonl {path}: ")
        return
    real = Path(os.path.realpath(path))
    assert real.parent.is_dir()
    assert not os.path.lexists(path) or (overwrite and written_by_edgevision(path))
    assert real != (tree / "clip.mp4") and not (real.exists() and os.path.samefile(real, tree / "clip.mp4"))
    assert tree / "art" not in real.parents and tree / "frames" not in real.parents and real.parent != tree / "frames"
