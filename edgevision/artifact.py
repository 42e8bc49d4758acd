"""The artifact directory: manifest.json, per-variant variant.json, checksums, atomic commit.

Layout (see ../shared/DESIGN.md):
    <output>/manifest.json           everything: task, labels, input spec, outputs, variants,
                                     tool versions, recipe hash, sha256 of every file
    <output>/model.onnx              the reference export
    <output>/<backend>-<precision>/  one folder per variant, with variant.json: a variant folder
                                     can be copied to a device and loaded on its own.

An artifact is built in a hidden sibling folder and renamed into place, so an interrupted compile
never leaves a half-written artifact and never destroys the previous one. Stdlib only (runtime).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Dict, Optional

from edgevision.errors import ArtifactError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
VARIANT = "variant.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_entries(root: Path, exclude: tuple = ()) -> Dict[str, Dict[str, Any]]:
    """sha256 and size of every file under root, by path relative to root (posix separators)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel not in exclude:
            out[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return out


def verify_files(root: Path, files: Dict[str, Dict[str, Any]]) -> None:
    """Raise ArtifactError naming every missing or modified file."""
    problems = []
    for rel, entry in files.items():
        p = root / rel
        if not p.is_file():
            problems.append(f"missing file {rel}")
        elif sha256_file(p) != entry["sha256"]:
            problems.append(f"modified file {rel} (sha256 mismatch)")
    if problems:
        raise ArtifactError(f"{root}: " + "; ".join(problems) + ". Rebuild the artifact with `edgevision compile`.")


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def read_json(path: Path, what: str) -> Dict[str, Any]:
    if not path.is_file():
        raise ArtifactError(f"{path.parent}: no {path.name} here; is this an edgevision {what} directory?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: not valid JSON ({e}); rebuild the artifact") from None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        raise ArtifactError(f"{path}: schema_version {version!r} is not supported (expected {SCHEMA_VERSION}); rebuild it")
    return data


def read_manifest(root: Path) -> Dict[str, Any]:
    root = Path(root)
    if not root.is_dir():
        raise ArtifactError(f"artifact directory not found: {root}")
    return read_json(root / MANIFEST, "artifact")


class Staging:
    """A temporary sibling directory that becomes `dest` only on commit().

    Used as a context manager: leaving the block without commit() removes the staging folder
    and leaves any previous `dest` untouched.
    """

    def __init__(self, dest: Path) -> None:
        self.dest = Path(dest).absolute()
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        recover(self.dest)
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.tmp-", dir=self.dest.parent))
        self._done = False

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._done:
            shutil.rmtree(self.path, ignore_errors=True)

    def commit(self, dest: Optional[Path] = None) -> Path:
        """Replace `dest` (default: the one given at creation) with the staged directory."""
        dest = Path(dest).absolute() if dest is not None else self.dest
        old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
        if dest.exists():
            os.rename(dest, old)
        try:
            os.rename(self.path, dest)
        except OSError:
            if old.exists():
                os.rename(old, dest)
            raise
        self._done = True
        shutil.rmtree(old, ignore_errors=True)
        return dest


def recover(dest: Path) -> None:
    """Undo a commit that was cut off between its two renames (dest gone, .old kept)."""
    if dest.exists():
        for old in dest.parent.glob(f".{dest.name}.old-*"):
            shutil.rmtree(old, ignore_errors=True)
        return
    olds = sorted(dest.parent.glob(f".{dest.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds:
        os.rename(olds[-1], dest)

