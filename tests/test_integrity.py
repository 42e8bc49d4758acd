"""Nothing in an artifact is used before it is checked (issue 13, item 3): variant.json is covered
by its own sha256 and the manifest's, the files it names stay inside its folder and are never
links, a malformed one is a clear error, and `inspect` reports extra files and links."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import edgevision
from edgevision.artifact import content_digest
from edgevision.errors import ArtifactError


@pytest.fixture
def artifact(unet_artifact, tmp_path: Path) -> Path:  # noqa: ANN001
    _, root = unet_artifact
    copy = tmp_path / "art"
    shutil.copytree(root, copy)
    return copy


def _edit(vdir: Path, change, resign: bool = False) -> None:  # noqa: ANN001
    path = vdir / "variant.json"
    info = json.loads(path.read_text())
    change(info)
    if resign:  # what someone who knows the format would do: recompute the self-digest
        info["sha256"] = content_digest(info)
    path.write_text(json.dumps(info))


def _load_error(path: Path, **kw) -> str:  # noqa: ANN003
    with pytest.raises(ArtifactError) as e:
        edgevision.load(path, **kw)
    return str(e.value)


def test_an_edited_variant_json_is_refused(artifact: Path, tmp_path: Path) -> None:
    vdir = artifact / "onnxruntime-fp32"
    with edgevision.load(vdir) as model:  # as compiled: loads
        assert model.labels[0] == "background"
    _edit(vdir, lambda i: i.update(labels=["cat", "dog", "cow", "pig"]))
    assert "edited since it was written" in _load_error(vdir)
    assert "edited since it was written" in _load_error(vdir, verify=False)  # the cheap check always runs
    _edit(vdir, lambda i: None, resign=True)  # self-digest fixed up: the manifest's sha256 still catches it
    assert "does not match the sha256 recorded for it in" in _load_error(vdir)
    alone = tmp_path / "alone"  # a variant folder copied to a device on its own
    shutil.copytree(artifact / "openvino-fp32", alone)
    _edit(alone, lambda i: i["input"].update(mean=[0.0, 0.0, 0.0]))
    assert "edited since it was written" in _load_error(alone)


def test_files_outside_the_variant_folder_or_linked_are_refused(artifact: Path, tmp_path: Path) -> None:
    alone = tmp_path / "alone"
    shutil.copytree(artifact / "onnxruntime-fp32", alone)
    for target in ("../openvino-fp32/model.xml", str(artifact / "onnxruntime-fp32" / "model.onnx")):
        _edit(alone, lambda i, t=target: i["settings"]["files"].update(model=t), resign=True)
        assert "leaves the folder" in _load_error(alone)
    shutil.rmtree(alone)
    shutil.copytree(artifact / "onnxruntime-fp32", alone)
    (alone / "model.onnx").unlink()
    (alone / "model.onnx").symlink_to(artifact / "onnxruntime-fp32" / "model.onnx")  # same bytes, same sha256
    assert "is a symbolic link" in _load_error(alone)
    assert "is a symbolic link" in _load_error(alone, verify=False)


@pytest.mark.parametrize("change,fragment", [
    (lambda i: i.update(task="painting"), "task 'painting' is not one of"),
    (lambda i: i.pop("settings"), "'settings' must be a dict"),
    (lambda i: i["input"].update(size=[64]), "'input' needs size"),
    (lambda i: i["settings"].update(files={}), "'settings.files' must map roles"),
    (lambda i: i.update(outputs=[]), "outputs not empty"),
])
def test_a_malformed_variant_json_is_a_clear_error(artifact: Path, change, fragment: str) -> None:  # noqa: ANN001
    vdir = artifact / "onnxruntime-fp32"
    _edit(vdir, change, resign=True)
    message = _load_error(vdir)
    assert "malformed" in message and fragment in message


def _inspect(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgevision", "inspect", str(root)], capture_output=True, text=True, timeout=300)


def test_inspect_reports_extra_files_links_and_edited_variant_json(artifact: Path) -> None:
    (artifact / "report.json").write_text("{}")  # the benchmark writes this later: a note, not a problem
    ok = _inspect(artifact)
    assert ok.returncode == 0 and "note: report.json (written after the compile" in ok.stdout, ok.stderr
    (artifact / "openvino-fp32" / "extra.bin").write_bytes(b"x")
    (artifact / "onnxruntime-fp32" / "other.onnx").symlink_to(artifact / "model.onnx")
    _edit(artifact / "openvino-bf16", lambda i: i.update(labels=["a", "b", "c", "d"]))
    bad = _inspect(artifact)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    for fragment in ("extra file openvino-fp32/extra.bin", "symbolic link onnxruntime-fp32/other.onnx",
                     "modified file openvino-bf16/variant.json", "openvino-bf16/variant.json: edited since"):
        assert fragment in bad.stderr, (fragment, bad.stderr)


def test_a_forged_manifest_is_refused_by_inspect_and_load(artifact: Path) -> None:
    """Issue 26, item 6: labels renamed and every mAP set to 0.99 used to pass inspect ("all files match")."""
    path = artifact / "manifest.json"
    original = path.read_text()
    data = json.loads(original)
    data["labels"] = ["cat", "dog", "cow", "pig"]
    for v in data["variants"]:
        v["accuracy"] = {**(v.get("accuracy") or {}), "miou": 0.99}
    path.write_text(json.dumps(data, indent=2))
    bad = _inspect(artifact)
    assert bad.returncode == 1 and "manifest.json: edited since it was written" in bad.stderr, bad.stderr
    assert "edited since it was written" in _load_error(artifact)
    assert "edited since it was written" in _load_error(artifact / "onnxruntime-fp32")  # its manifest is read too
    del data["sha256"]  # a forger who drops the digest: loads (as an older artifact would), inspect cannot vouch for it
    path.write_text(json.dumps(data, indent=2))
    no_digest = _inspect(artifact)
    assert no_digest.returncode == 1 and "has no sha256 of its own content" in no_digest.stderr, no_digest.stderr
    path.write_text(original)
    assert _inspect(artifact).returncode == 0


def test_a_variant_folder_linked_from_inside_an_artifact_is_refused(artifact: Path, tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere"
    shutil.copytree(artifact / "onnxruntime-fp32", copy)
    shutil.rmtree(artifact / "onnxruntime-fp32")
    (artifact / "onnxruntime-fp32").symlink_to(copy)
    assert "is a symbolic link" in _load_error(artifact / "onnxruntime-fp32")
    assert "is a symbolic link" in _load_error(artifact, variant="onnxruntime-fp32")
