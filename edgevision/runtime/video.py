"""`edgevision run`: a stream's frames -> annotated video files, JSON Lines, a window.

The video is written under a temporary name next to the target and renamed when it is finalised,
so a file at the target path is always a complete, playable video (also after Ctrl-C or an error
mid-stream; a killed process leaves only the temporary file).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Deque, Dict, Iterator, List, Optional, Sequence

import numpy as np

from edgevision.errors import InputError
from edgevision.runtime.annotate import status
from edgevision.runtime.instances import mask_rle
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
    _check_file_target(path, "--save")
    return [path] if sources == 1 else [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(sources)]


def _check_file_target(path: Path, option: str) -> None:
    if path.is_dir() or not path.parent.is_dir():
        raise InputError(f"{option} {path}: {'is a folder' if path.is_dir() else 'its folder does not exist'}")


class VideoSink:
    """An annotated video per source, same size and fps as the source's first frame."""

    def __init__(self, paths: List[Path], fps: Sequence[float]) -> None:
        self.paths, self.fps = paths, list(fps)
        self.writers: Dict[int, Any] = {}
        self.sizes: Dict[int, tuple] = {}
        self.frames = [0] * len(paths)

    def _partial(self, i: int) -> Path:
        return self.paths[i].with_name(f".{self.paths[i].stem}.partial{self.paths[i].suffix}")

    def write(self, source: int, image: np.ndarray) -> None:
        cv2 = opencv()
        if source not in self.writers:
            h, w = image.shape[:2]
            fourcc = cv2.VideoWriter_fourcc(*FOURCC[self.paths[source].suffix.lower()])
            writer = cv2.VideoWriter(str(self._partial(source)), fourcc, self.fps[source], (w, h))
            if not writer.isOpened():
                raise InputError(f"--save {self.paths[source]}: OpenCV cannot write this video format here")
            self.writers[source], self.sizes[source] = writer, (w, h)
        if (image.shape[1], image.shape[0]) != self.sizes[source]:  # image folders may mix sizes
            image = cv2.resize(image, self.sizes[source], interpolation=cv2.INTER_AREA)
        self.writers[source].write(image)
        self.frames[source] += 1

    def close(self) -> List[Path]:
        """Finalise every video (release, then rename into place); returns the written paths."""
        done = []
        for i, writer in sorted(self.writers.items()):
            writer.release()
            os.replace(self._partial(i), self.paths[i])
            done.append(self.paths[i])
        self.writers.clear()
        return done


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
    log: Optional[IO[str]] = None
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
            self.log.write(json.dumps({"source": frame.source, "frame": frame.index, "timestamp": round(frame.timestamp, 4),
                                       "width": int(frame.image.shape[1]), "height": int(frame.image.shape[0]),
                                       "latency_ms": round(frame.latency_ms, 2), **coco_record(frame.result)}) + "\n")
        if self.on_frame is not None:
            self.on_frame(frame)
        self.written += 1
        return not closed


class _CtrlC:
    """Ctrl-C lands between frames, never inside one: a frame's video frame, log line and callback
    are written together, so the outputs agree on how many frames they hold. Only in the main
    thread, and only over Python's own handler (a handler the application set is left alone)."""

    def __init__(self) -> None:
        self.busy = self.pending = False
        self.previous: Any = None

    def __enter__(self) -> "_CtrlC":
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum: int, frame: Any) -> None:
        if not self.busy:
            raise KeyboardInterrupt
        self.pending = True

    @contextmanager
    def frame(self) -> Iterator[None]:
        self.busy = True
        try:
            yield
        finally:
            self.busy = False
        if self.pending:
            raise KeyboardInterrupt


def run(model: Any, sources: List[SourceLike], *, save: Optional[Path] = None, jsonl: Optional[Path] = None,
        show: bool = False, on_frame: Optional[Callable[[Frame], None]] = None, **options: Any) -> Dict[str, Any]:
    """Stream `sources` through the model, write what was asked; returns the stream's stats (with
    "interrupted": True after Ctrl-C, and "frames": the frames written; the outputs are finalised
    either way)."""
    paths = output_paths(save, len(sources)) if save is not None else None
    if jsonl is not None:
        _check_file_target(jsonl, "--jsonl")
    display = Display() if show else None
    stream = model.stream(sources, draw=bool(paths) or show, **options)
    video = VideoSink(paths, [c.fps for c in stream.captures]) if paths else None
    outputs, interrupted = _Outputs(video=video, display=display, on_frame=on_frame), False
    try:
        outputs.log = jsonl.open("w", buffering=1) if jsonl is not None else None  # a line per frame, for tail -f
        with _CtrlC() as ctrl_c:
            for frame in stream:
                with ctrl_c.frame():
                    going = outputs.write(frame)
                if not going:
                    break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stream.stop()
        stats = {**stream.stats(), "frames": outputs.written, "interrupted": interrupted}
        if video is not None:
            stats["videos"] = [{"path": str(p), "frames": video.frames[i]} for i, p in enumerate(video.paths)
                               if i in video.writers]
            video.close()
        if outputs.log is not None:
            outputs.log.write(json.dumps({"stats": stats}) + "\n")
            outputs.log.close()
        if display is not None:
            display.close()
    return stats
