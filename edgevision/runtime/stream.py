"""Predictor.stream: frames from one or more sources through the model, pipelined, in frame order.

Threads, each stage overlapping the others, every queue between them bounded:

    reader per source (sources.py: decode, drop policy, reconnect)
      -> dispatcher (round robin over sources; one frame per source into a batch when the artifact
         has a dynamic batch and there are several sources)
      -> `in_flight` workers (pre-processing, the engine, post-processing; the runners are
         thread-safe, OpenVINO gives each worker its own infer request)
      -> the caller (or on_result's thread): frames come back in dispatch order, so every source's
         frames arrive in their order; tracking runs here because it needs that order.

A slow caller holds up the workers, which hold up the dispatcher, which makes a file reader wait
and a live reader drop by its policy: nothing grows without bound.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgevision.errors import InputError, SourceError
from edgevision.runtime.annotate import annotate
from edgevision.runtime.sources import Capture, Captured, Event, SourceLike, open_captures
from edgevision.runtime.track import Tracker, require_tracker
from edgevision.tasks import DETECTION_TASKS

STAGES = ("wait", "pre", "infer", "post", "total")
_END = object()
_SAMPLES = 10_000  # latency percentiles are over the most recent frames, so memory stays bounded


@dataclass
class Frame:
    """One frame and its result. image is HxWx3 uint8 BGR as decoded (frame.rgb for RGB)."""

    source: int  # position of its source in the list given to stream()
    index: int  # frame number within its source (gaps: frames a live source dropped)
    timestamp: float  # seconds: position in a file/folder; since the stream started for live sources
    image: np.ndarray
    result: Any = None
    stages: Dict[str, float] = field(default_factory=dict)  # ms: wait, pre, infer, post, total (capture to result)
    overlay: Optional[np.ndarray] = None  # with draw=True: the image with the result drawn on it (BGR)

    @property
    def rgb(self) -> np.ndarray:
        return np.ascontiguousarray(self.image[..., ::-1])

    @property
    def latency_ms(self) -> float:
        return self.stages.get("total", float("nan"))


class Stream:
    """Iterate for frames in order (`for frame in stream`), or pass on_result to have them pushed
    from a background thread (then `wait()` for the end, `stop()` to end early). Use as a context
    manager, or call stop(), to release cameras and threads."""

    def __init__(self, predictor: Any, sources: Sequence[SourceLike], *, drop: str = "oldest", buffer: int = 4,
                 in_flight: int = 2, track: bool = False, min_score: Optional[float] = None,
                 classes: Optional[List[Union[int, str]]] = None, top_k: int = 5, reconnect: int = 5,
                 backoff: float = 0.5, timeout: float = 10.0, fps: float = 30.0, max_frames: Optional[int] = None,
                 reconnect_window: float = 60.0, draw: bool = False, on_result: Optional[Callable[[Frame], None]] = None,
                 on_event: Optional[Event] = None) -> None:
        if not sources:
            raise SourceError("stream: give at least one source")
        if predictor.max_proposals is not None:
            raise InputError(f"{predictor.name} takes external proposals per image; call predict(image, proposals=...)")
        if in_flight < 1:
            raise InputError(f"in_flight must be >= 1, got {in_flight}")
        if (track or min_score is not None or classes is not None) and predictor.task not in DETECTION_TASKS:
            raise InputError(f"track, min_score and classes apply to detections; {predictor.name} is {predictor.task}")
        self.predictor, self.in_flight, self.top_k, self.draw = predictor, in_flight, top_k, draw
        self.filter = {"min_score": min_score, "classes": classes} if min_score is not None or classes else None
        if track:
            require_tracker()  # before any source is opened
        self._ready, self._stop = threading.Condition(), threading.Event()
        self.captures: List[Capture] = open_captures(
            list(sources), self._ready, self._stop, drop=drop, buffer=buffer, reconnect=reconnect, backoff=backoff,
            timeout=timeout, fps=fps, limit=max_frames, reconnect_window=reconnect_window, on_event=on_event)
        self.batch = max(1, min(predictor.max_batch, len(self.captures)))
        self._trackers = [Tracker(c.fps) for c in self.captures] if track else None
        self._pending: "queue.Queue[Any]" = queue.Queue(maxsize=in_flight)
        self._pool = ThreadPoolExecutor(in_flight, thread_name_prefix="edgevision-infer")
        self._dispatcher = threading.Thread(target=self._dispatch, name="edgevision-dispatch", daemon=True)
        self._samples: Dict[str, Deque[float]] = {s: deque(maxlen=_SAMPLES) for s in STAGES}
        self._inferred = [0] * len(self.captures)
        self._started = self._finished = 0.0
        self._iterating = False
        self._push: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None
        if on_result is not None:
            self._push = threading.Thread(target=self._deliver, args=(on_result,), name="edgevision-results", daemon=True)
            self._push.start()

    # -- the caller's side -------------------------------------------------------------------
    def __iter__(self) -> Iterator[Frame]:
        if self._iterating:
            raise InputError("a stream can be iterated once; call model.stream(...) again for a new pass")
        self._iterating = True
        self._begin()
        try:
            while True:
                item = self._next_item()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield from self._complete(*item)
        finally:
            self.stop()

    def _next_item(self) -> Any:
        while not self._stop.is_set():  # stop() from another thread (or a callback) ends the iteration
            try:
                return self._pending.get(timeout=0.1)  # short waits keep Ctrl-C responsive everywhere
            except queue.Empty:
                continue
        return _END

    def _complete(self, future: "Future[Any]", picks: List[Tuple[Capture, Captured]]) -> Iterator[Frame]:
        """The frames of one finished batch, with their results (tracked, and drawn when asked)."""
        try:
            results, overlays, (t0, t1, t2, t3) = future.result()
        except CancelledError:  # stop() cancelled it
            return
        for (capture, got), result, overlay in zip(picks, results, overlays):
            if self._trackers is not None:
                self._trackers[capture.number].update(result)
                if self.draw:  # track IDs are drawn too, so this waits for them
                    overlay = annotate(got.image, result)
            now = time.perf_counter()
            stages = {"wait": t0 - got.captured, "pre": (t1 - t0) / len(picks), "infer": (t2 - t1) / len(picks),
                      "post": (t3 - t2) / len(picks), "total": now - got.captured}
            stages = {k: v * 1000.0 for k, v in stages.items()}
            for k, v in stages.items():
                self._samples[k].append(v)
            self._inferred[capture.number] += 1
            yield Frame(capture.number, got.index, got.timestamp, got.image, result, stages, overlay)

    def _deliver(self, on_result: Callable[[Frame], None]) -> None:
        try:
            for frame in self:
                on_result(frame)
        except BaseException as e:  # handed to wait(): a background thread must not fail silently
            self._error = e

    def wait(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Push style: block until the stream ends; raise its error (TimeoutError if it is still
        running after `timeout` seconds); return the stats."""
        if self._push is None:
            raise InputError("wait() is for streams started with on_result; iterate the stream instead")
        self._push.join(timeout)
        if self._push.is_alive():
            raise TimeoutError(f"the stream is still running after {timeout} s; stop() ends it")
        if self._error is not None:
            raise self._error
        return self.stats()

    def stop(self) -> None:
        """End the stream: readers, dispatcher and workers stop; cameras and files are released."""
        self._stop.set()
        with self._ready:
            self._ready.notify_all()
        if self._dispatcher.is_alive():
            self._dispatcher.join(2.0)
        self._pool.shutdown(wait=True, cancel_futures=True)
        for c in self.captures:
            c.join(2.0)
        if not self._finished:
            self._finished = time.perf_counter()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._push is not None and self._push is not threading.current_thread():
            self._push.join(2.0)

    # -- the pipeline ----------------------------------------------------------------------------
    def _begin(self) -> None:
        self._started = time.perf_counter()
        for c in self.captures:
            c.start()
        self._dispatcher.start()

    def _dispatch(self) -> None:
        turn = 0
        try:
            while True:
                picks = self._gather(turn)
                if picks is None:
                    break
                turn += 1
                self._put((self._pool.submit(self._infer, [got for _, got in picks]), picks))
        except BaseException as e:
            self._put(e)
        finally:
            self._put(_END)

    def _gather(self, turn: int) -> Optional[List[Tuple[Capture, Captured]]]:
        """Up to `batch` frames, at most one per source, rotating the first; None at the end."""
        n = len(self.captures)
        with self._ready:
            while not self._stop.is_set():
                picks = []
                for k in range(n):
                    capture = self.captures[(turn + k) % n]
                    got = capture.take()
                    if got is not None:
                        picks.append((capture, got))
                        if len(picks) == self.batch:
                            break
                if picks:
                    return picks
                for capture in self.captures:
                    if capture.error is not None:
                        raise capture.error
                if all(c.ended for c in self.captures):
                    return None
                self._ready.wait(0.1)
        return None

    def _put(self, item: Any) -> None:
        while True:
            try:
                self._pending.put(item, timeout=0.1)
                return
            except queue.Full:
                if self._stop.is_set():
                    return

    def _infer(self, frames: List[Captured]) -> Tuple[List[Any], List[Optional[np.ndarray]], Tuple[float, ...]]:
        t0 = time.perf_counter()
        feeds, transforms = self.predictor.feeds([f.image for f in frames], bgr=True)  # decoded: uint8 HxWx3 BGR
        t1 = time.perf_counter()
        outputs = self.predictor.runner.infer(feeds)
        t2 = time.perf_counter()
        results = self.predictor.decode(outputs, transforms, top_k=self.top_k)
        if self.filter is not None:
            results = [r.filter(**self.filter) for r in results]
        t3 = time.perf_counter()
        drawn = self.draw and self._trackers is None  # drawing on the workers spreads it over the cores
        overlays = [annotate(f.image, r) if drawn else None for f, r in zip(frames, results)]
        return results, overlays, (t0, t1, t2, t3)

    # -- what happened ---------------------------------------------------------------------------
    def stats(self) -> Dict[str, Any]:
        """Frames read / inferred / dropped per source, FPS, per-stage latency p50 / p99 in ms."""
        end = self._finished or time.perf_counter()
        seconds = max(end - self._started, 1e-9) if self._started else 0.0
        inferred = sum(self._inferred)
        sources = [{**c.counts(), "inferred": n} for c, n in zip(self.captures, self._inferred)]
        return {
            "frames": inferred, "dropped": sum(c.dropped for c in self.captures), "seconds": round(seconds, 3),
            "fps": round(inferred / seconds, 2) if seconds else 0.0, "in_flight": self.in_flight, "batch": self.batch,
            "latency_ms": _percentiles(self._samples["total"]),
            "stages_ms": {s: _percentiles(self._samples[s]) for s in STAGES if s != "total"},
            "sources": sources,
        }


def _percentiles(samples: Deque[float]) -> Dict[str, Optional[float]]:
    if not samples:
        return {"p50": None, "p99": None}
    p50, p99 = np.percentile(np.fromiter(samples, float), [50, 99])
    return {"p50": round(float(p50), 2), "p99": round(float(p99), 2)}
