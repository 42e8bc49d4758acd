"""Frame sources for Predictor.stream and `edgevision run`: video files, image folders, cameras,
network streams (RTSP, HTTP MJPEG, ...) and GStreamer pipelines, each read by its own thread into
a small buffer.

Files and folders never lose a frame: the reader waits while the buffer is full (back-pressure).
Live sources cannot wait, so a policy decides what goes when inference falls behind: drop the
oldest buffered frame (default; the result stays as fresh as possible), drop the newest (incoming)
one, or none (the reader waits and the device's own buffer fills). Live sources that stop
delivering frames reconnect with bounded retries and exponential back-off, then fail with an
error that names the source. Frames are BGR uint8, as OpenCV decodes them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Deque, List, Optional, Tuple, Union

import numpy as np

from edgevision.errors import InputError, SourceError
from edgevision.runtime.images import IMAGE_FILES, MAX_PIXELS, read_image
from edgevision.runtime.preprocess import opencv

NETWORK_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
DROP_POLICIES = ("oldest", "newest", "none")
SourceLike = Union[str, int, Path]
Event = Callable[[str], None]


@dataclass(frozen=True)
class SourceSpec:
    text: str  # as the user gave it, for messages
    kind: str  # file | folder | camera | network | gstreamer
    live: bool  # a live source drops frames by policy and reconnects; a file never drops

    @property
    def label(self) -> str:
        return f"camera {self.text}" if self.kind == "camera" else self.text


def describe(source: SourceLike) -> SourceSpec:
    """What kind of source the user named (nothing is opened yet)."""
    if isinstance(source, bool) or not isinstance(source, (str, int, Path)):
        raise SourceError(f"source {source!r}: give a video file, an image folder, a camera index, a URL or a "
                          "GStreamer pipeline string")
    text = str(source)
    if isinstance(source, int) or text.strip().isdigit():
        return SourceSpec(text.strip(), "camera", True)
    if " ! " in text:
        return SourceSpec(text, "gstreamer", True)
    if text.lower().startswith(NETWORK_SCHEMES):
        return SourceSpec(text, "network", True)
    path = Path(text)
    if path.is_dir():
        return SourceSpec(text, "folder", False)
    if path.is_file():
        return SourceSpec(text, "file", False)
    raise SourceError(f"source {text!r}: no such file or folder; a source is a video file, an image folder, a camera "
                      "index (0), a URL (rtsp://, http://...) or a GStreamer pipeline ('... ! appsink')")


class _Video:
    """One cv2.VideoCapture: files, cameras, network streams, GStreamer pipelines."""

    def __init__(self, spec: SourceSpec, timeout: float) -> None:
        cv2 = opencv()
        self.spec = spec
        ms = int(timeout * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        if spec.kind == "camera":
            self.cap = cv2.VideoCapture(int(spec.text))
        elif spec.kind == "gstreamer":
            if "GStreamer:                   YES" not in cv2.getBuildInformation():
                raise SourceError(f"source {spec.text!r} is a GStreamer pipeline, but this OpenCV ({cv2.__version__}) was "
                                  "built without GStreamer (the pip wheels are); use an OpenCV built with it (e.g. "
                                  "JetPack's python3-opencv), or give a file, camera index or URL")
            self.cap = cv2.VideoCapture(spec.text, cv2.CAP_GSTREAMER)
        else:
            self.cap = cv2.VideoCapture(spec.text, cv2.CAP_FFMPEG, params)
        if not self.cap.isOpened():
            self.cap.release()
            raise SourceError(_cannot_open(spec))
        fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0 < fps < 1000 else 0.0
        self._pos = cv2.CAP_PROP_POS_MSEC

    def read(self) -> Optional[Tuple[np.ndarray, Optional[float]]]:
        ok, image = self.cap.read()
        if not ok or image is None:
            return None
        stamp = self.cap.get(self._pos) / 1000.0 if self.spec.kind == "file" else None
        return image, stamp

    def close(self) -> None:
        self.cap.release()


class _Folder:
    """Image files of a folder in name order (images.IMAGE_FILES), decoded as predict() decodes a file
    (EXIF orientation, the max_pixels limit), as BGR. An unreadable file is skipped with a message
    and counted (`unreadable`); the run goes on with the next one."""

    def __init__(self, spec: SourceSpec, fps: float, on_event: Event) -> None:
        self.spec, self.on_event = spec, on_event
        self.files = sorted(p for p in Path(spec.text).iterdir() if p.suffix.lower() in IMAGE_FILES and p.is_file())
        if not self.files:
            raise SourceError(f"source {spec.text!r}: the folder has no image files ({', '.join(IMAGE_FILES)})")
        self.fps = fps
        self.unreadable = 0
        self._next = 0

    def read(self) -> Optional[Tuple[np.ndarray, Optional[float]]]:
        while self._next < len(self.files):
            path, stamp = self.files[self._next], self._next / self.fps
            self._next += 1
            try:
                return np.ascontiguousarray(read_image(path, MAX_PIXELS)[..., ::-1]), stamp
            except InputError as e:
                self.unreadable += 1
                self.on_event(f"source {self.spec.text!r}: skipped {path.name}: {e}")
        return None

    def close(self) -> None:
        self._next = len(self.files)


def _cannot_open(spec: SourceSpec) -> str:
    hints = {
        "camera": "check that the camera is connected and not in use by another program (ls /dev/video*)",
        "network": "check the URL and that the stream is up (e.g. ffprobe URL)",
        "gstreamer": "check the pipeline with gst-launch-1.0; it must end in appsink",
        "file": "it is not a video that OpenCV's FFmpeg can decode (try ffprobe on it)",
    }
    return f"cannot open source {spec.label!r}: {hints[spec.kind]}"


def open_reader(spec: SourceSpec, timeout: float, fps: float, on_event: Event) -> Union[_Video, _Folder]:
    return _Folder(spec, fps, on_event) if spec.kind == "folder" else _Video(spec, timeout)


@dataclass
class Captured:
    index: int  # frame number in its source, counting dropped frames (gaps show drops)
    timestamp: float  # seconds: position in a file or folder (index / fps), since the start for live sources
    image: np.ndarray  # HxWx3 uint8 BGR
    captured: float  # time.perf_counter() when read


class Capture:
    """Reads one source on its own thread into a buffer shared-locked with the stream (`ready`)."""

    def __init__(self, number: int, source: SourceLike, ready: threading.Condition, stop: threading.Event, *,
                 drop: str = "oldest", buffer: int = 4, reconnect: int = 5, backoff: float = 0.5,
                 timeout: float = 10.0, fps: float = 30.0, limit: Optional[int] = None,
                 reconnect_window: float = 60.0, on_event: Optional[Event] = None) -> None:
        if drop not in DROP_POLICIES:
            raise SourceError(f"drop policy {drop!r}: use one of {', '.join(DROP_POLICIES)}")
        if buffer < 1 or reconnect < 0 or backoff < 0 or timeout <= 0 or reconnect_window <= 0:
            raise SourceError("buffer must be >= 1, reconnect and backoff >= 0, timeout and reconnect_window > 0")
        self.number, self.spec = number, describe(source)
        self.drop = drop if self.spec.live else "none"  # files and folders never drop
        self.buffer, self.reconnect, self.backoff, self.timeout = buffer, reconnect, backoff, timeout
        self.limit = limit  # frames to read at most (None: to the end)
        self.ready, self.stop, self.on_event = ready, stop, on_event or (lambda message: None)
        self.window = reconnect_window  # at most `reconnect` reconnects within any window of this many seconds
        self._reconnected: Deque[float] = deque()
        self.reader = open_reader(self.spec, timeout, fps, self.on_event)
        self.fps = self.reader.fps or fps
        self.frames: Deque[Captured] = deque()
        self.read = self.dropped = self.reconnects = 0
        self.ended = False
        self.error: Optional[BaseException] = None
        self._start = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name=f"edgevision-source-{number}", daemon=True)

    def start(self) -> None:
        self._start = time.perf_counter()
        self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait for the reader thread; a reader never started releases its source here."""
        if self._thread.ident is None:
            self.reader.close()
            self.ended = True
        elif self._thread.is_alive():
            self._thread.join(timeout)

    def take(self) -> Optional[Captured]:
        """The next buffered frame, or None (caller holds `ready`)."""
        if not self.frames:
            return None
        frame = self.frames.popleft()
        self.ready.notify_all()  # a file reader waiting for room may go on
        return frame

    def _run(self) -> None:
        failures = 0
        try:
            while not self.stop.is_set() and (self.limit is None or self.read < self.limit):
                got = self.reader.read()
                if got is None:
                    if not self.spec.live:
                        break
                    failures += 1
                    self._reconnect(failures)
                    continue
                failures = 0
                image, stamp = got
                now = time.perf_counter()
                self._put(Captured(self.read, now - self._start if stamp is None else stamp, image, now))
                self.read += 1
        except BaseException as e:  # reported by the stream; a thread must not die silently
            self.error = e if isinstance(e, SourceError) else SourceError(f"source {self.spec.label!r}: {e}")
        finally:
            self.reader.close()
            with self.ready:
                self.ended = True
                self.ready.notify_all()

    def _put(self, frame: Captured) -> None:
        with self.ready:
            while len(self.frames) >= self.buffer and self.drop == "none" and not self.stop.is_set():
                self.ready.wait(0.1)
            if len(self.frames) >= self.buffer:
                if self.drop == "newest":
                    self.dropped += 1
                    return
                self.frames.popleft()
                self.dropped += 1
            self.frames.append(frame)
            self.ready.notify_all()

    def _reconnect(self, failures: int) -> None:
        """After a failed read of a live source: wait, reopen; fail once `reconnect` attempts in a row
        failed, or once it took `reconnect` reconnects within `reconnect_window` seconds (a source that
        ends or stalls after every few frames would otherwise be reconnected forever)."""
        self.reader.close()
        if failures > self.reconnect:
            raise SourceError(f"source {self.spec.label!r} stopped delivering frames; {self.reconnect} reconnect attempts "
                              f"failed (timeout {self.timeout:g} s each, back-off from {self.backoff:g} s); check that it is up")
        now = time.monotonic()
        while self._reconnected and now - self._reconnected[0] > self.window:
            self._reconnected.popleft()
        if len(self._reconnected) >= max(self.reconnect, 1):
            raise SourceError(f"source {self.spec.label!r} keeps dropping: {len(self._reconnected)} reconnects within "
                              f"{self.window:g} s (at most {self.reconnect}); check the stream's server or network")
        delay = min(self.backoff * 2 ** (failures - 1), 10.0)
        self.on_event(f"source {self.spec.label!r}: no frames; reconnecting in {delay:.1f} s "
                      f"(attempt {failures}/{self.reconnect})")
        if self.stop.wait(delay):
            return
        try:
            self.reader = open_reader(self.spec, self.timeout, self.fps, self.on_event)
        except SourceError:
            self.reader = _Closed()
            return
        self.reconnects += 1
        self._reconnected.append(time.monotonic())
        self.on_event(f"source {self.spec.label!r}: reconnected")

    def counts(self) -> dict:
        return {"source": self.spec.text, "kind": self.spec.kind, "live": self.spec.live, "read": self.read,
                "dropped": self.dropped, "reconnects": self.reconnects,
                "unreadable": getattr(self.reader, "unreadable", 0)}


class _Closed:
    """A reader whose reopen failed: every read fails, so the next attempt follows."""

    fps = 0.0

    def read(self) -> None:
        return None

    def close(self) -> None:
        pass


def open_captures(sources: List[SourceLike], ready: threading.Condition, stop: threading.Event,
                  **options: object) -> List[Capture]:
    """Open every source now (so a wrong one fails before anything runs); close all on an error."""
    captures: List[Capture] = []
    try:
        for number, source in enumerate(sources):
            captures.append(Capture(number, source, ready, stop, **options))  # type: ignore[arg-type]
    except BaseException:
        for c in captures:
            c.reader.close()
        raise
    return captures
