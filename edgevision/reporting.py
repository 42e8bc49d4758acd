"""How compile, train and benchmark report progress: plain text by default, nothing in tests;
the command line passes console.RichReporter. At the bottom: imports no other edgevision module."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator


class Reporter:
    """Plain-text progress, used by the Python API; the CLI passes a RichReporter."""

    def info(self, message: str) -> None:
        print(message, flush=True)

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[..., None]]:
        """Yield advance(n=1, note=''); plain mode prints the description only."""
        self.info(description)
        yield lambda n=1, note="": None


class SilentReporter(Reporter):
    """Says nothing (tests, benchmark scripts)."""

    def info(self, message: str) -> None:
        pass
