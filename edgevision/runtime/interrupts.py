"""Ctrl-C (SIGINT) and SIGTERM for `edgevision run`: both land between frames, never inside one, so a
frame's video frame, log line and callback are written together and the outputs agree on how many
frames they hold. SIGTERM (timeout, docker stop, systemd) raises errors.Terminated, a
KeyboardInterrupt, so everything that finalises on Ctrl-C finalises on it too.

Only in the main thread, and only over the default dispositions (Python's own SIGINT handler, SIGTERM's
default action): a handler the application set, or a signal the launcher ignores (nohup ignores
SIGINT), is left alone.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional

from edgevision.errors import Terminated

_DEFAULTS = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}


class BetweenFrames:
    """A context manager; `with it.frame():` around each frame's writes defers a signal to its end."""

    def __init__(self) -> None:
        self.busy = False
        self.pending: Optional[int] = None
        self.previous: Dict[int, Any] = {}

    def __enter__(self) -> "BetweenFrames":
        if threading.current_thread() is threading.main_thread():
            for sig, default in _DEFAULTS.items():
                if signal.getsignal(sig) is default:
                    self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.busy:
            self.pending = signum
        else:
            _raise(signum)

    @contextmanager
    def frame(self) -> Iterator[None]:
        self.busy = True
        try:
            yield
        finally:
            self.busy = False
        if self.pending is not None:
            _raise(self.pending)


def _raise(signum: int) -> None:
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def signal_name(error: BaseException) -> str:
    return "SIGTERM" if isinstance(error, Terminated) else "SIGINT"
