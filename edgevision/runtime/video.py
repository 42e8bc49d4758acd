"""`edgevision run`: a stream's frames -> annotated video files, JSON Lines, a window.

The video is written under a temporary name next to the target (.NAME.partial-PID.mp4), re-opened and
its frames counted when it is finalised, and only then renamed into place, so a file at the target
path is always a complete, playable video (also after Ctrl-C, SIGTERM or an error mid-stream; a disk
that fills up is an OutputError and leaves no file at the target). A killed process leaves only the
temporary file, which the next run to the same target removes. Where outputs may go: outputs.py.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Deque, Dict, List, Optional, Sequence

import numpy as np

from edgevision.errors import InputError, OutputError
from edgevision.runtime.annotate import status
from edgevision.runtime.instances import mask_rle
from edgevision.runtime.interrupts import BetweenFrames, signal_name
from edgevision.runtime.outputs import check_outputs, mark_written, write_error
from edgevision.runtime.preprocess import opencv
from edgevision.runtime.results import Classification, Segmentation
from edgevision.runtime.sources import SourceLike
from edgevision.runtime.stream import Frame

FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}


def coco_record(result: Any) -> Dict[str, Any]:
    """A result as JSON: detections with COCO bbox [x, y, w, h] (original pixels), RLE masks and
    [x, y, v] keypoints; segmentation as per-class RLE; classification as top-k."""
    if isinstance(result, Classification):
        return result.to_dict()
    if isinstance(result, Segmentation):
        ids, areas = np.unique(result.label_map, return_counts=True)
        return {"segments": [{"class_id": int(i), "label": result.name_of(int(i)), "area": int(a),
                              "segmentation": mask_rle(result.label_map == i)} for i, a in zip(ids, areas)]}
    items = []
    class_ids = {name: int(c) for name, c in zip(result.names, result.class_ids)}
    for i, entry in enumerate(result.to_coco(0, class_ids)):  # every name is in class_ids: one entry per detection
        item: Dict[str, Any] = {"label": result.names[i], "class_id": entry["category_id"],
                                "score": round(entry["score"], 4), "bbox": [round(v, 2) for v in entry["bbox"]]}
        if result.track_ids is not None:
            item["track_id"] = int(result.track_ids[i])
        item.update({k: entry[k] for k in ("segmentation", "keypoints") if k in entry})
        items.append(item)
    return {"detections": items}


def output_paths(path: Path, sources: int) -> List[Path]:
    """One video per source: the path itself for one source, name-0.mp4, name-1.mp4 ... for several."""
    if path.suffix.lower() not in FOURCC:
        raise InputError(f"--save {path}: use a video file name ending in {', '.join(FOURCC)}")
    return [path] if sources == 1 else [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(sources)]


class VideoSink:
    """An annotated video per source, same size and fps as the source's first frame."""

    SPACE_EVERY = 30  # frames between checks of the free disk space (OpenCV's writer reports no error)
    MIN_FREE = 8 << 20  # bytes: below this the run stops with "the disk is full" instead of writing a broken file

    def __init__(self, paths: List[Path], fps: Sequence[float]) -> None:
        self.paths, self.fps = paths, list(fps)
        self.writers: Dict[int, Any] = {}
        self.sizes: Dict[int, tuple] = {}
        self.frames = [0] * len(paths)
        for p in paths:
            remove_stale_partials(p)

    def _partial(self, i: int) -> Path:
        return partial_path(self.paths[i], os.getpid())

    def write(self, source: int, image: np.ndarray) -> None:
        cv2 = opencv()
        if source not in self.writers:
            h, w = image.shape[:2]
            fourcc = cv2.VideoWriter_fourcc(*FOURCC[self.paths[source].suffix.lower()])
            writer = cv2.VideoWriter(str(self._partial(source)), fourcc, self.fps[source], (w, h))
            if not writer.isOpened():
                raise OutputError(f"--save {self.paths[source]}: OpenCV cannot write this video format here")
            self.writers[source], self.sizes[source] = writer, (w, h)
        if self.frames[source] % self.SPACE_EVERY == 0:
            free = shutil.disk_usage(self.paths[source].parent).free
            if free < self.MIN_FREE:
                raise OutputError(f"--save {self.paths[source]}: the disk is full ({free // 1024} KiB free after "
                                  f"{self.frames[source]} frames)")
        if (image.shape[1], image.shape[0]) != self.sizes[source]:  # image folders may mix sizes
            image = cv2.resize(image, self.sizes[source], interpolation=cv2.INTER_AREA)
        self.writers[source].write(image)
        self.frames[source] += 1

    def close(self) -> List[Path]:
        """Finalise every video: release it, read it back and count its frames, then rename it into
        place (marked as edgevision's). One that does not hold every frame written (a full disk, an
        I/O error) is deleted, and raises OutputError once all are done; returns the written paths."""
        done, problems = [], []
        for i, writer in sorted(self.writers.items()):
            writer.release()
            partial = self._partial(i)
            problem = _unreadable(partial, self.frames[i])
            if problem is None:
                os.replace(partial, self.paths[i])
                mark_written(self.paths[i])
                done.append(self.paths[i])
            else:
                partial.unlink(missing_ok=True)
                problems.append(f"--save {self.paths[i]}: {problem}; nothing was written there")
        self.writers.clear()
        if problems:
            raise OutputError("; ".join(problems))
        return done


def partial_path(path: Path, pid: int) -> Path:
    return path.with_name(f".{path.stem}.partial-{pid}{path.suffix}")


def remove_stale_partials(path: Path) -> None:
    """Remove the temporary files of earlier runs to `path` whose process is gone (killed: SIGKILL,
    power loss), and the one older versions named .NAME.partial.EXT."""
    for p in [path.with_name(f".{path.stem}.partial{path.suffix}"), *path.parent.glob(f".{path.stem}.partial-*{path.suffix}")]:
        pid = p.name[len(f".{path.stem}.partial-"): -len(path.suffix) or None]
        if p.is_file() and not p.is_symlink() and not (pid.isdigit() and _alive(int(pid))):
            p.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _unreadable(path: Path, frames: int) -> Optional[str]:
    """Why the finished video at `path` is not a playable file of `frames` frames (None: it is)."""
    cv2 = opencv()
    if not path.is_file() or path.stat().st_size == 0:
        return "the video file is empty (is the disk full?)"
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return "the finished video cannot be read back (is the disk full?)"
        counted = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if counted <= 0:  # a container without a frame count: decode them
            counted = 0
            while cap.grab():
                counted += 1
    finally:
        cap.release()
    return None if counted == frames else f"the finished video holds {counted} of the {frames} frames written"


class _Log:
    """The JSON Lines output: a line per frame (line-buffered, for tail -f), then the statistics."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.file: Optional[IO[str]] = path.open("w", buffering=1, encoding="utf-8")
        except OSError as e:
            raise write_error("--jsonl", path, e) from None

    def write(self, record: Dict[str, Any]) -> None:
        if self.file is None:
            return
        try:
            self.file.write(json.dumps(record) + "\n")
        except OSError as e:
            self._abandon()
            raise write_error("--jsonl", self.path, e) from None

    def close(self, stats: Dict[str, Any]) -> Optional[OutputError]:
        """Write the statistics line and close; an error is returned, not raised (this runs in clean-up)."""
        try:
            self.write({"stats": stats})
            if self.file is not None:
                self.file.close()
                mark_written(self.path)
        except OutputError as e:
            return e
        except OSError as e:  # the last buffered bytes, at close
            return write_error("--jsonl", self.path, e)
        finally:
            self.file = None
        return None

    def _abandon(self) -> None:
        file, self.file = self.file, None
        try:
            file.close()  # type: ignore[union-attr]
        except OSError:
            pass


class Display:
    """cv2.imshow windows, one per source; 'q' or Esc stops the run."""

    def __init__(self) -> None:
        cv2 = opencv()
        if "GUI:                           NONE" in cv2.getBuildInformation():
            raise InputError("--show needs OpenCV with a GUI (pip install opencv-python, not -headless); "
                             "use --save to write a video instead")
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise InputError("--show needs a display (DISPLAY is not set: no X or Wayland session here); "
                             "use --save to write a video instead")

    def show(self, source: int, image: np.ndarray) -> bool:
        cv2 = opencv()
        cv2.imshow(f"edgevision {source}", image)
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        opencv().destroyAllWindows()


@dataclass
class _Outputs:
    """Where each frame goes (video, JSON Lines, window, callback), the live FPS over the last 30
    frames, and the frames written in all."""

    video: Optional[VideoSink] = None
    log: Optional[_Log] = None
    display: Optional[Display] = None
    on_frame: Optional[Callable[[Frame], None]] = None
    written: int = 0
    times: Deque[float] = field(default_factory=lambda: deque(maxlen=30))

    def fps(self) -> float:
        self.times.append(time.perf_counter())
        span = self.times[-1] - self.times[0]
        return (len(self.times) - 1) / span if span > 0 else 0.0

    def write(self, frame: Frame) -> bool:
        """One frame to every output; False when the window was closed ('q': the frame is still
        logged, then the run ends)."""
        fps, closed = self.fps(), False
        if frame.overlay is not None:
            status(frame.overlay, f"{fps:5.1f} FPS  {frame.latency_ms:4.0f} ms")
            if self.video is not None:
                self.video.write(frame.source, frame.overlay)
            closed = self.display is not None and not self.display.show(frame.source, frame.overlay)
        if self.log is not None:
            self.log.write({"source": frame.source, "frame": frame.index, "timestamp": round(frame.timestamp, 4),
                            "width": int(frame.image.shape[1]), "height": int(frame.image.shape[0]),
                            "latency_ms": round(frame.latency_ms, 2), **coco_record(frame.result)})
        if self.on_frame is not None:
            self.on_frame(frame)
        self.written += 1
        return not closed


def run(model: Any, sources: List[SourceLike], *, save: Optional[Path] = None, jsonl: Optional[Path] = None,
        overwrite: bool = False, show: bool = False, on_frame: Optional[Callable[[Frame], None]] = None,
        **options: Any) -> Dict[str, Any]:
    """Stream `sources` through the model, write what was asked; returns the stream's stats (with
    "interrupted": True and "signal": "SIGINT" | "SIGTERM" after Ctrl-C or SIGTERM, and "frames": the
    frames written; the outputs are finalised either way). Outputs are checked first (outputs.py): an
    existing file is replaced only with overwrite=True and only if edgevision wrote it."""
    paths = output_paths(Path(save), len(sources)) if save is not None else []
    check_outputs({"--save": paths, "--jsonl": [Path(jsonl)] if jsonl is not None else []}, sources, overwrite)
    display = Display() if show else None
    stream = model.stream(sources, draw=bool(paths) or show, **options)
    video = VideoSink(paths, [c.fps for c in stream.captures]) if paths else None
    outputs, interrupted = _Outputs(video=video, display=display, on_frame=on_frame), None
    failure: Optional[OutputError] = None
    try:
        outputs.log = _Log(Path(jsonl)) if jsonl is not None else None
        with BetweenFrames() as between:
            for frame in stream:
                with between.frame():
                    going = outputs.write(frame)
                if not going:
                    break
    except KeyboardInterrupt as e:  # Ctrl-C, and SIGTERM (errors.Terminated)
        interrupted = signal_name(e)
    finally:
        stream.stop()
        stats = {**stream.stats(), "frames": outputs.written, "interrupted": interrupted is not None,
                 "signal": interrupted}
        failure = _finalise(outputs, stats)
    if failure is not None:
        raise failure
    return stats


def _finalise(outputs: _Outputs, stats: Dict[str, Any]) -> Optional[OutputError]:
    """Close every output (videos checked and renamed into place, the log's statistics line); the
    first problem is returned, so the others are still closed."""
    failure = None
    video = outputs.video
    if video is not None:
        try:
            written = video.close()
        except OutputError as e:
            failure, written = e, []
        stats["videos"] = [{"path": str(p), "frames": video.frames[video.paths.index(p)]} for p in written]
    if outputs.log is not None:
        failure = outputs.log.close(stats) or failure
    if outputs.display is not None:
        outputs.display.close()
    return failure
