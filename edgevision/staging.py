"""Committing an artifact folder (compile side): where it may go, and the atomic swap.

An artifact is built in a hidden sibling folder and renamed into place, so an interrupted compile
never leaves a half-written artifact and never destroys the previous one; nothing but an
edgevision artifact (or an empty folder) is ever replaced (README, "The artifact").
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Optional, Sequence

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from edgevision.artifact import is_artifact
from edgevision.errors import ArtifactError

STALE_UNLOCKED_SECONDS = 3600  # a staging folder without a lock file (older versions) is stale after this


def check_destination(dest: Path, protected: Sequence[Path] = (), field: str = "output") -> Path:
    """The absolute folder an artifact may be committed to, or an ArtifactError naming `field`.

    Refused: the filesystem root, the home folder, any folder that holds the working directory or
    a `protected` path (the recipe), a file, and an existing folder that is neither empty nor an
    edgevision artifact: committing replaces the folder whole, so these would be lost."""
    raw = str(dest)
    if not raw.strip() or "\x00" in raw:
        raise ArtifactError(f"{field}: {raw!r} is not a folder name; give one such as build/<name>")
    where = Path(dest).absolute()
    real = where.resolve()
    fix = "; give a folder of its own, such as build/<name>"
    if real == Path(real.anchor) or real == Path.home().resolve():
        raise ArtifactError(f"{field}: {raw} is {'the filesystem root' if real == Path(real.anchor) else 'the home folder'}"
                            f" and would be replaced by the artifact{fix}")
    for label, p in [("the working directory", Path.cwd()), *(("the recipe", Path(q)) for q in protected)]:
        held = Path(p).absolute().resolve()
        if held == real or real in held.parents:
            raise ArtifactError(f"{field}: {raw} holds {label} ({held}), which committing the artifact would delete{fix}")
    if where.is_symlink() or real.exists():
        if not real.is_dir():
            raise ArtifactError(f"{field}: {raw} exists and is not a folder{fix}")
        if any(real.iterdir()) and not is_artifact(real):
            raise ArtifactError(f"{field}: {raw} exists and is not an edgevision artifact (no manifest.json of ours); "
                                f"edgevision replaces only its own artifacts: move it away{fix}")
    return where


class Staging:
    """A temporary sibling directory that becomes `dest` only on commit().

    Used as a context manager: leaving the block without commit() removes the staging folder
    and leaves any previous `dest` untouched. While it lives, the staging folder is marked by a
    sibling lock file held with flock; staging folders whose lock is free (their process died,
    e.g. SIGKILL) are removed when the next Staging of the same artifact starts.
    """

    def __init__(self, dest: Path) -> None:
        self.dest = Path(dest).absolute()
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        recover(self.dest)
        clean_stale_staging(self.dest)
        stem = f".{self.dest.name}.tmp-{uuid.uuid4().hex[:12]}"
        self._lock = _Lock(self.dest.parent / f"{stem}.lock")  # taken before the folder exists
        self.path = self.dest.parent / stem
        self.path.mkdir()
        self._done = False

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._done:
            shutil.rmtree(self.path, ignore_errors=True)
        self._lock.release()

    def commit(self, dest: Optional[Path] = None) -> Path:
        """Replace `dest` (default: the one given at creation) with the staged directory; an
        existing `dest` must be an edgevision artifact or empty (check_destination)."""
        dest = check_destination(dest if dest is not None else self.dest)
        old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
        if dest.exists() or dest.is_symlink():
            os.rename(dest, old)
        try:
            os.rename(self.path, dest)
        except OSError:
            if old.exists():
                os.rename(old, dest)
            raise
        self._done = True
        if old.is_symlink():
            old.unlink()
        else:
            shutil.rmtree(old, ignore_errors=True)
        return dest


class _Lock:
    """An exclusive flock on a file, released when the process ends however it ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: Optional[int] = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        if fcntl is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


def clean_stale_staging(dest: Path) -> list[Path]:
    """Remove `dest`'s staging folders left by processes that died (their lock file is free);
    another process's live staging folder (lock held) is never touched. Returns what was removed.
    Folders without a lock file (older versions) count as stale after STALE_UNLOCKED_SECONDS."""
    if fcntl is None:  # no flock (Windows): a live folder cannot be told from a dead one
        return []
    removed = []
    for folder in dest.parent.glob(f".{dest.name}.tmp-*"):
        if folder.suffix == ".lock" or not folder.is_dir():
            continue
        lock = folder.with_name(folder.name + ".lock")
        if not lock.exists():
            if time.time() - folder.stat().st_mtime < STALE_UNLOCKED_SECONDS:
                continue
        else:
            try:
                fd = os.open(lock, os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held: a live compile
                os.close(fd)
                continue
            lock.unlink(missing_ok=True)
            os.close(fd)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def recover(dest: Path) -> None:
    """Undo a commit that was cut off between its two renames (dest gone, .old kept)."""
    if dest.exists():
        for old in dest.parent.glob(f".{dest.name}.old-*"):
            shutil.rmtree(old, ignore_errors=True)
        return
    olds = sorted(dest.parent.glob(f".{dest.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds:
        os.rename(olds[-1], dest)
