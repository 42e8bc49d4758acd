from __future__ import annotations

from pathlib import Path

import pytest

from edgevision.artifact import file_entries, verify_files
from edgevision.staging import Staging, check_destination, clean_stale_staging, recover
from edgevision.errors import ArtifactError

MANIFEST = '{"schema_version": 1, "variants": []}'


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_commit_replaces_previous(tmp_path: Path) -> None:
    dest = tmp_path / "art"
    with Staging(dest) as s:
        (s.path / "a.txt").write_text("one")
        (s.path / "manifest.json").write_text(MANIFEST)
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
        (s.path / "manifest.json").write_text(MANIFEST)
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


def test_output_folders_that_hold_user_data_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    (project / "recipes").mkdir(parents=True)
    (project / "recipes" / "r.yaml").write_text("name: x\n")
    (project / "notes.txt").write_text("mine")
    monkeypatch.chdir(project)
    for bad, why in [(".", "holds the working directory"), ("..", "holds the working directory"),
                     (str(project), "holds the working directory"), ("/", "the filesystem root"),
                     (str(Path.home()), "home folder"), ("recipes/..", "holds the working directory")]:
        with pytest.raises(ArtifactError, match=why):
            check_destination(Path(bad))
    with pytest.raises(ArtifactError, match=r"holds the recipe"):
        check_destination(tmp_path / "elsewhere" / ".." / "project" / "recipes", protected=[Path("recipes/r.yaml")])
    (project / "data").mkdir()
    (project / "data" / "keep.jpg").write_bytes(b"jpeg")
    with pytest.raises(ArtifactError, match="data exists and is not an edgevision artifact"):
        check_destination(Path("data"))
    with pytest.raises(ArtifactError, match="notes.txt exists and is not a folder"):
        check_destination(Path("notes.txt"))
    (project / "empty").mkdir()
    assert check_destination(Path("empty")) == project / "empty"  # nothing to lose
    (project / "old").mkdir()
    (project / "old" / "manifest.json").write_text(MANIFEST)
    assert check_destination(Path("old")) == project / "old"  # our own artifact: replaced
    # the commit itself checks too (what compile calls last): the working directory survives whole
    with pytest.raises(ArtifactError, match="holds the working directory"):
        with Staging(Path(".")) as s:
            (s.path / "manifest.json").write_text(MANIFEST)
            s.commit()
    with pytest.raises(ArtifactError, match="not an edgevision artifact"):
        with Staging(Path("data")) as s:
            s.commit()
    assert (project / "notes.txt").read_text() == "mine" and (project / "data" / "keep.jpg").read_bytes() == b"jpeg"
    assert (project / "recipes" / "r.yaml").is_file() and _hidden(project) == [] and _hidden(tmp_path) == []


_HOLD = ("import sys, time\nfrom edgevision.staging import Staging\n"
         "s = Staging(sys.argv[1])\nprint(s.path, flush=True)\ntime.sleep(120)\n")


def test_staging_of_a_killed_process_is_cleaned_and_a_live_one_kept(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    dest = tmp_path / "art"
    procs = [subprocess.Popen([sys.executable, "-c", _HOLD, str(dest)], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        live, dead = (Path(p.stdout.readline().strip()) for p in procs)
        assert live.is_dir() and dead.is_dir() and live != dead
        procs[1].send_signal(signal.SIGKILL)
        procs[1].wait(10)
        assert dead.is_dir()  # SIGKILL ran no clean-up
        assert clean_stale_staging(dest) == [dead]
        assert not dead.exists() and not dead.with_name(dead.name + ".lock").exists()
        with Staging(dest) as s:  # the next compile of the same artifact: the live one's folder stays
            assert live.is_dir() and s.path.is_dir()
        assert live.is_dir() and sorted(_hidden(tmp_path)) == sorted([live.name, live.name + ".lock"])
    finally:
        for p in procs:
            p.kill()
            p.wait(10)
    assert clean_stale_staging(dest) == [live] and _hidden(tmp_path) == []
