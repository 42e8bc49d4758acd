"""Video for the stream tests: clips written with OpenCV's VideoWriter, and a real live source,
MJPEG over HTTP (multipart/x-mixed-replace, as IP cameras
serve it) on 127.0.0.1, from generated shapes frames, at a set rate. stop() closes the listening
socket and every open connection, as a camera that goes away would; start() brings it back on the
same port."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import List, Optional, Sequence

import cv2
import numpy as np

from edgevision.data import ShapesDataset


def shapes_frames(count: int, size: tuple[int, int] = (240, 320), seed: int = 3) -> List[np.ndarray]:
    """BGR frames of the shapes dataset (what the quickstart detector was trained on)."""
    ds = ShapesDataset(count, seed=seed, size=size)
    return [np.ascontiguousarray(ds[i].image[..., ::-1]) for i in range(count)]


def moving_frames(count: int, step: int = 3, size: tuple[int, int] = (240, 320), seed: int = 5) -> List[np.ndarray]:
    """One shapes scene sliding right by `step` pixels a frame (for tracking)."""
    scene = shapes_frames(1, size, seed=seed)[0]
    return [cv2.warpAffine(scene, np.float32([[1, 0, step * i], [0, 1, 0]]), (size[1], size[0]),
                           borderMode=cv2.BORDER_REPLICATE) for i in range(count)]


def write_clip(path: Path, frames: Sequence[np.ndarray], fps: float = 25.0) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def decoded(path: Path) -> List[np.ndarray]:
    """Every frame of a video as OpenCV decodes it."""
    cap, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = cap.read()
        if not ok:
            cap.release()
            return frames
        frames.append(frame)


def jpeg_frames(count: int, size: tuple[int, int] = (240, 320), seed: int = 11) -> List[bytes]:
    return [cv2.imencode(".jpg", f)[1].tobytes() for f in shapes_frames(count, size, seed)]


class MjpegServer:
    """per_connection: end each response cleanly after that many frames (a flaky camera or relay)."""

    def __init__(self, fps: float = 60.0, frames: Optional[List[bytes]] = None,
                 per_connection: Optional[int] = None) -> None:
        self.fps, self.frames, self.per_connection = fps, frames or jpeg_frames(16), per_connection
        self.port = 0
        self.sent = 0
        self._server: Optional[ThreadingHTTPServer] = None
        self._conns: List[socket.socket] = []
        self._lock = threading.Lock()
        self._running = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> "MjpegServer":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                with owner._lock:
                    owner._conns.append(self.connection)
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                owner._serve(self.wfile)

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._running.set()
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def _serve(self, out) -> None:  # noqa: ANN001
        period, i = 1.0 / self.fps, 0
        next_at = time.perf_counter()
        try:
            while self._running.is_set() and (self.per_connection is None or i < self.per_connection):
                data = self.frames[i % len(self.frames)]
                out.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data) + data + b"\r\n")
                out.flush()
                i += 1
                self.sent += 1
                next_at += period
                time.sleep(max(0.0, next_at - time.perf_counter()))
        except OSError:  # the client went away, or stop() closed the socket
            pass

    def stop(self) -> None:
        self._running.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._conns.clear()

    def __enter__(self) -> "MjpegServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
