"""The artifact directory as the runtime reads it: manifest.json, variant.json, checksums.

Layout:
    <output>/manifest.json           everything: task, labels, input spec, outputs, variants,
                                     tool versions, recipe hash, sha256 of every file
    <output>/model.onnx              the reference export
    <output>/<backend>-<precision>/  one folder per variant, with variant.json: a variant folder
                                     can be copied to a device and loaded on its own.

What is trusted: nothing in a variant folder is used before it is checked. manifest.json and every
variant.json carry the sha256 of their own content (canonical JSON without that field), so an
edit of either is caught (a digest, not a signature: it catches edits, not a forger who recomputes
it); inside its artifact, manifest.json's sha256 of each variant.json must match too; every file it names must be listed
with a sha256, lie inside the variant folder and not be a symbolic link. Stdlib only (runtime).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Tuple

from edgevision.errors import ArtifactError
from edgevision.records import SCHEMA_VERSION, Manifest, ModelInfo, RecordError, VariantRecord

MANIFEST = "manifest.json"
VARIANT = "variant.json"
# Written into an artifact after its compile by edgevision itself, so not in the manifest's list:
# benchmark reports, and a TensorRT engine (and timing cache) built on the device at first load.
LATER_FILES = ("report.json", "report.md", "report.html", "*/model.engine", "*/timing.cache")


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


def inside(root: Path, rel: Any, what: str) -> Path:
    """root/rel for a listed file name, or an ArtifactError if it could read anything else: an
    absolute path, '..', or a symbolic link anywhere below root."""
    if not isinstance(rel, str) or not rel or "\x00" in rel or "\\" in rel:
        raise ArtifactError(f"{root}: {what} names {rel!r}, which is not a file name inside the folder; rebuild the artifact")
    parts = PurePosixPath(rel).parts
    if PurePosixPath(rel).is_absolute() or ".." in parts or not parts:
        raise ArtifactError(f"{root}: {what} names {rel!r}, which leaves the folder; rebuild the artifact")
    path = root
    for part in parts:
        path = path / part
        if path.is_symlink():
            raise ArtifactError(f"{root}: {rel} is a symbolic link ({path} -> {os.readlink(path)}); an artifact holds "
                                "its own files: copy them in and rebuild")
    return path


def verify_files(root: Path, files: Dict[str, Dict[str, Any]]) -> None:
    """Raise ArtifactError naming every missing, modified, linked or outside file."""
    problems = file_problems(root, files)
    if problems:
        raise ArtifactError(f"{root}: " + "; ".join(problems) + ". Rebuild the artifact with `edgevision compile`.")


def file_problems(root: Path, files: Any) -> List[str]:
    if not isinstance(files, dict):
        return ["its list of files is malformed"]
    problems = []
    for rel, entry in files.items():
        try:
            p = inside(root, rel, "the file list")
        except ArtifactError as e:
            problems.append(str(e))
            continue
        if not p.is_file():
            problems.append(f"missing file {rel}")
        elif not isinstance(entry, dict) or sha256_file(p) != entry.get("sha256"):
            problems.append(f"modified file {rel} (sha256 mismatch)")
    return problems


def is_artifact(path: Path) -> bool:
    """Whether `path` is a folder that edgevision wrote: its manifest.json names a schema version
    and a list of variants (what `compile` may replace, and what the runtime never writes into)."""
    try:
        data = json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "schema_version" in data and isinstance(data.get("variants"), list)


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def read_json(path: Path, what: str) -> Dict[str, Any]:
    if path.is_symlink():
        raise ArtifactError(f"{path}: is a symbolic link; an artifact holds its own files: rebuild it")
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


def read_manifest(root: Path) -> Manifest:
    """manifest.json as a typed record, or a clear ArtifactError (missing, malformed, edited, another schema)."""
    root = Path(root)
    if not root.is_dir():
        raise ArtifactError(f"artifact directory not found: {root}")
    path = root / MANIFEST
    try:
        return Manifest.from_json(_read_manifest_json(path))
    except (RecordError, TypeError, ValueError) as e:
        raise ArtifactError(f"{path}: malformed ({e}); rebuild the artifact") from None


def write_manifest(root: Path, manifest: Manifest) -> None:
    body = json.loads(json.dumps(manifest.to_json()))
    write_json(Path(root) / MANIFEST, {**body, "sha256": content_digest(body)})


def manifest_digest_missing(root: Path) -> bool:
    """Whether manifest.json predates content digests (older edgevision: loads, but inspect cannot vouch for it)."""
    return "sha256" not in read_json(Path(root) / MANIFEST, "artifact")


def _read_manifest_json(path: Path) -> Dict[str, Any]:
    data = read_json(path, "artifact")
    if "sha256" in data and data["sha256"] != content_digest(data):
        raise ArtifactError(f"{path}: edited since it was written (its content does not match its sha256); "
                            "rebuild the artifact with `edgevision compile`")
    return data


def content_digest(info: Dict[str, Any]) -> str:
    """sha256 of a manifest.json's or variant.json's content without its own "sha256" field (canonical JSON)."""
    body = {k: v for k, v in info.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class VariantFile:
    """A variant.json, checked: the model it runs and the variant itself."""

    info: ModelInfo
    variant: VariantRecord


def read_variant(vdir: Path) -> VariantFile:
    """A variant folder's variant.json, checked: well-formed, unedited, its files listed and inside."""
    path = Path(vdir) / VARIANT
    data = read_json(path, "variant")
    try:
        problems = _variant_problems(data)
        if problems:
            raise RecordError("; ".join(problems))
        found = VariantFile(ModelInfo.from_json(data), VariantRecord.from_json(data))
    except (RecordError, TypeError, ValueError) as e:
        raise ArtifactError(f"{path}: malformed ({e}); rebuild the artifact") from None
    if data.get("sha256") != content_digest(data):
        raise ArtifactError(f"{path}: edited since it was written (its content does not match its sha256"
                            f"{'' if 'sha256' in data else ', which it lacks: written by an older edgevision'}); "
                            "rebuild the artifact with `edgevision compile`")
    listed = _manifest_entry(Path(vdir))
    if listed is not None and listed != sha256_file(path):
        raise ArtifactError(f"{path}: does not match the sha256 recorded for it in {Path(vdir).parent / MANIFEST}; "
                            "rebuild the artifact")
    for role, rel in data["settings"]["files"].items():
        inside(Path(vdir), rel, f"settings.files.{role}")
        if rel not in data["files"]:
            raise ArtifactError(f"{path}: settings.files.{role} names {rel!r}, which has no sha256 in its file list; "
                                "rebuild the artifact")
    return found


def write_variant(vdir: Path, info: ModelInfo, variant: VariantRecord) -> None:
    """variant.json: the model, the variant's public fields, and the sha256 of that content."""
    public = json.loads(json.dumps({**info.to_json(), **variant.to_json(VariantRecord.PUBLIC)}))
    write_json(Path(vdir) / VARIANT, {**public, "sha256": content_digest(public)})


def _manifest_entry(vdir: Path) -> Any:
    """The sha256 the enclosing artifact's manifest records for this variant.json (None: no manifest)."""
    manifest = vdir.parent / MANIFEST
    if not manifest.is_file():
        return None  # a variant folder copied on its own
    data = _read_manifest_json(manifest)
    entry = (data.get("files") or {}).get(f"{vdir.name}/{VARIANT}") if isinstance(data.get("files"), dict) else None
    return entry.get("sha256") if isinstance(entry, dict) else ""


def _variant_problems(info: Dict[str, Any]) -> List[str]:
    """What a variant.json lacks beyond its model (ModelInfo checks that): the runner's settings
    and the file list (empty: usable)."""
    problems = [f"'{key}' must be a {kind.__name__}" for key, kind in (("settings", dict), ("files", dict))
                if not isinstance(info.get(key), kind)]
    if problems:
        return problems
    files = info["settings"].get("files")
    if not isinstance(files, dict) or not files or not all(isinstance(v, str) for v in files.values()):
        problems.append("'settings.files' must map roles to file names")
    return problems


def _matches(rel: str, pattern: str) -> bool:
    path, glob = PurePosixPath(rel), PurePosixPath(pattern)
    return len(path.parts) == len(glob.parts) and path.match(pattern)


def audit_artifact(root: Path) -> Tuple[List[str], List[str]]:
    """Everything `inspect` checks: (problems, notes). Problems: listed files missing, modified or
    outside; files on disk not listed; symbolic links; any variant.json that `load` would refuse.
    Notes: files edgevision writes after the compile (LATER_FILES)."""
    root = Path(root)
    manifest = read_manifest(root)
    listed = manifest.files
    problems = file_problems(root, listed)
    if manifest_digest_missing(root):
        problems.append(f"{MANIFEST} has no sha256 of its own content (written by an older edgevision), so an edit of it "
                        "cannot be detected")
    notes = []
    for folder, dirs, names in os.walk(root):  # never follows a linked folder
        for name in sorted(dirs + names):
            p = Path(folder) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                problems.append(f"symbolic link {rel} -> {os.readlink(p)}")
            elif p.is_file() and rel != MANIFEST and rel not in (listed or {}):
                if any(_matches(rel, pattern) for pattern in LATER_FILES):
                    notes.append(f"{rel} (written after the compile; not checksummed)")
                else:
                    problems.append(f"extra file {rel} (not in the manifest)")
    for v in manifest.variants:
        try:
            vdir = inside(root, v.name, "variants")
        except ArtifactError as e:
            problems.append(str(e))
            continue
        if (vdir / VARIANT).exists():
            try:
                read_variant(vdir)
            except ArtifactError as e:
                problems.append(str(e))
    return problems, notes
