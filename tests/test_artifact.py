from __future__ import annotations

from pathlib import Path

import pytest

from edgevision.artifact import Staging, file_entries, recover, verify_files
from edgevision.errors import ArtifactError


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_commit_replaces_previous(tmp_path: Path) -> None:
    dest = tmp_path / "art"
    with Staging(dest) as s:
        (s.path / "a.txt").write_text("one")
        s.commit()
    with Staging(dest) as s:
        (s.path / "b.txt").write_text("two")
        s.commit()
    assert sorted(p.name for p in dest.iterdir()) == ["b.txt"]
    assert _hidden(tmp_path) == []


def test_interrupted_build_keeps_previous_and_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "art"
    with Staging(dest) as s:
        (s.path / "good.txt").write_text("good")
        s.commit()
    with pytest.raises(KeyboardInterrupt):
        with Staging(dest) as s:
            (s.path / "half.bin").write_bytes(b"x" * 10)
            raise KeyboardInterrupt
    assert (dest / "good.txt").read_text() == "good" and not (dest / "half.bin").exists()
    assert _hidden(tmp_path) == []


def test_recover_after_crash_between_renames(tmp_path: Path) -> None:
    dest = tmp_path / "art"
    old = tmp_path / ".art.old-1234"
    old.mkdir()
    (old / "m.json").write_text("{}")
    recover(dest)
    assert (dest / "m.json").exists() and not old.exists()


def test_verify_names_missing_and_modified_files(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "model.bin").write_bytes(b"weights")
    (tmp_path / "model.xml").write_text("<xml/>")
    files = file_entries(tmp_path)
    assert set(files) == {"sub/model.bin", "model.xml"}
    verify_files(tmp_path, files)
    (tmp_path / "sub" / "model.bin").write_bytes(b"weightz")
    (tmp_path / "model.xml").unlink()
    with pytest.raises(ArtifactError) as e:
        verify_files(tmp_path, files)
    assert "modified file sub/model.bin (sha256 mismatch)" in str(e.value)
    assert "missing file model.xml" in str(e.value)
