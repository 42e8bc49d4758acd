"""Files the runtime writes for the user (`run --save/--jsonl`, `predict --save`): where they may go
and how edgevision tells its own files from the user's.

An output is refused, with an OutputError naming the option, when it
- exists, unless --overwrite is given and edgevision wrote it: a finished output carries the
  extended attribute `user.edgevision` with its size and modification time, so a file edgevision
  wrote and nobody changed since is known, and anything else (a user's file, an output edited or
  copied elsewhere, a filesystem without extended attributes) is never replaced;
- is a source being read, or resolves to one (a symbolic link to it, a hard link: same inode), or
  lies inside a source folder;
- lies inside an edgevision artifact folder (nothing but `compile` writes there);
- is another output of the same run.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from edgevision.artifact import is_artifact
from edgevision.errors import OutputError

MARK = "user.edgevision"  # extended attribute of a finished output: {"size": bytes, "mtime_ns": ...}


def mark_written(path: Path) -> None:
    """Record that edgevision wrote `path` as it is now (a no-op where the filesystem has no xattrs)."""
    info = os.stat(path)
    try:
        os.setxattr(path, MARK, json.dumps({"size": info.st_size, "mtime_ns": info.st_mtime_ns}).encode())
    except (OSError, AttributeError):  # ENOTSUP (some filesystems), or no xattrs on this OS: never ours
        pass


def written_by_edgevision(path: Path) -> bool:
    """Whether `path` is a regular file edgevision finished and nobody changed since."""
    try:
        info = os.stat(path)
        mark = json.loads(os.getxattr(path, MARK))
    except (OSError, AttributeError, ValueError):
        return False
    return (isinstance(mark, dict) and os.path.isfile(path) and mark.get("size") == info.st_size
            and mark.get("mtime_ns") == info.st_mtime_ns)


def check_outputs(outputs: Dict[str, Sequence[Path]], sources: Iterable[object] = (), overwrite: bool = False,
                  new_folder: bool = False) -> None:
    """Refuse any output path of `outputs` (option -> paths) that may not be written (module doc).
    new_folder: the caller creates a missing folder (after this check, so never inside an artifact)."""
    seen: Dict[Path, str] = {}
    readable = [Path(str(s)) for s in sources if isinstance(s, (str, Path)) and os.path.lexists(str(s))]
    for option, paths in outputs.items():
        for path in paths:
            real = _real(path)
            if real in seen:
                raise OutputError(f"{option} {path}: is also the {seen[real]} output; give each output its own file")
            seen[real] = option
            _check_one(option, Path(path), real, readable, overwrite, new_folder)


def _check_one(option: str, path: Path, real: Path, sources: List[Path], overwrite: bool, new_folder: bool) -> None:
    if path.is_dir():
        raise OutputError(f"{option} {path}: is a folder; give a file name")
    if not new_folder and not real.parent.is_dir():
        raise OutputError(f"{option} {path}: its folder {path.parent} does not exist")
    for source in sources:
        if _same(path, source) or real == _real(source):
            raise OutputError(f"{option} {path}: is the source {source}, which is being read; write somewhere else")
        if source.is_dir() and _real(source) in real.parents:
            raise OutputError(f"{option} {path}: lies inside the source folder {source}, which is being read; "
                              "write somewhere else")
    artifact = _enclosing_artifact(real)
    if artifact is not None:
        raise OutputError(f"{option} {path}: lies inside the edgevision artifact {artifact}; nothing but `edgevision "
                          "compile` writes there (its files are checksummed): write somewhere else")
    if os.path.lexists(path):
        if not overwrite:
            raise OutputError(f"{option} {path}: exists; pass --overwrite to replace it (only a file edgevision wrote is "
                              "replaced), or give another name")
        if not written_by_edgevision(path):
            raise OutputError(f"{option} {path}: exists and is not a file edgevision wrote (or it was changed since), "
                              "so --overwrite does not replace it; move it away or give another name")


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _enclosing_artifact(real: Path) -> Optional[Path]:
    for folder in real.parents:
        if is_artifact(folder):
            return folder
    return None


def write_error(option: str, path: Path, error: OSError) -> OutputError:
    """An OSError while writing an output, as one clear line (disk full, quota, permission, I/O)."""
    why = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
           errno.EACCES: "permission denied", errno.EROFS: "the filesystem is read-only"}.get(
        error.errno, error.strerror or type(error).__name__)
    return OutputError(f"{option} {path}: cannot write ({why})")
