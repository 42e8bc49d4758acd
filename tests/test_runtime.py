"""The runtime: torch-free, Python 3.10, and the predict() API on every kind of input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edgevision
from edgevision.data import ShapesDataset
from edgevision.errors import InputError

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
import numpy as np
import edgevision
out = {}
for variant in sys.argv[2:]:
    with edgevision.load(sys.argv[1] + "/" + variant) as m:
        r = m.predict(sys.argv[1] + "/../probe.png")
        out[variant] = r.label_map.tolist()
assert "torch" not in sys.modules, "the runtime imported torch"
assert "onnx" not in sys.modules, "the runtime imported onnx"
print(json.dumps({"maps": out, "python": sys.version_info[:2]}))
"""


def _probe(python: str, root: Path) -> dict:
    Image.fromarray(ShapesDataset(1, seed=21, size=(45, 70))[0].image).save(root.parent / "probe.png")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([python, "-c", PROBE, str(root), "onnxruntime-fp32", "openvino-fp32"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_runtime_does_not_import_torch(unet_artifact) -> None:  # noqa: ANN001
    _, root = unet_artifact
    result = _probe(sys.executable, root)
    with edgevision.load(root / "openvino-fp32") as m:
        expected = m.predict(root.parent / "probe.png").label_map
    np.testing.assert_array_equal(np.array(result["maps"]["openvino-fp32"]), expected)


@pytest.mark.skipif(not os.environ.get("EDGEVISION_PY310"), reason="set EDGEVISION_PY310 to a Python 3.10 with numpy, onnxruntime, openvino (.ci/run does)")
def test_runtime_runs_on_python_310(unet_artifact) -> None:  # noqa: ANN001
    _, root = unet_artifact
    result = _probe(os.environ["EDGEVISION_PY310"], root)
    assert result["python"] == [3, 10]
    with edgevision.load(root / "onnxruntime-fp32") as m:
        expected = m.predict(root.parent / "probe.png").label_map
    np.testing.assert_array_equal(np.array(result["maps"]["onnxruntime-fp32"]), expected)


def test_predict_accepts_every_input_kind(unet_artifact, tmp_path: Path) -> None:  # noqa: ANN001
    _, root = unet_artifact
    rgb = ShapesDataset(1, seed=3, size=(40, 60))[0].image
    Image.fromarray(rgb).save(tmp_path / "x.png")
    with edgevision.load(root / "onnxruntime-fp32") as m:
        ref = m.predict(rgb).label_map
        np.testing.assert_array_equal(m.predict(str(tmp_path / "x.png")).label_map, ref)
        np.testing.assert_array_equal(m.predict(Image.fromarray(rgb)).label_map, ref)
        np.testing.assert_array_equal(m.predict(rgb[:, :, ::-1].copy(), channel_order="bgr").label_map, ref)
        batch = m.predict([rgb, tmp_path / "x.png"] * 3)  # more than one batch chunk is fine too
        assert len(batch) == 6 and all((r.label_map == ref).all() for r in batch)
        gray = m.predict(rgb.mean(axis=2).astype(np.uint8))
        assert gray.label_map.shape == (40, 60)
        assert m.predict(np.concatenate([rgb, np.full((40, 60, 1), 255, np.uint8)], axis=2)).label_map.shape == (40, 60)
        sixteen = m.predict(rgb.astype(np.uint16) * 257)
        np.testing.assert_array_equal(sixteen.label_map, ref)
        scored = m.predict(rgb, scores=True)
        assert scored.scores.shape == (4, 40, 60) and np.allclose(scored.scores.sum(0), 1, atol=1e-4)
        np.testing.assert_array_equal(scored.scores.argmax(0), scored.label_map)
        assert m.predict([]) == []
        with pytest.raises(InputError, match="image not found"):
            m.predict(tmp_path / "missing.png")


def _without(packages: list[str], code: str) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter where importing `packages` fails (as if not installed)."""
    blocker = "import sys\n" + "".join(f"sys.modules[{p!r}] = None\n" for p in packages)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", blocker + code], capture_output=True, text=True, env=env, timeout=120)


def test_help_works_with_no_backend_and_no_torch() -> None:
    proc = _without(["torch", "onnxruntime", "openvino", "onnx"],
                    "from edgevision.cli import main\nimport sys\nsys.exit(main(['--help']))")
    assert proc.returncode == 0, proc.stderr
    assert "compile" in proc.stdout


def test_missing_backend_names_the_package(unet_artifact) -> None:  # noqa: ANN001
    _, root = unet_artifact
    proc = _without(["openvino"], f"import edgevision\nedgevision.load({str(root / 'openvino-fp32')!r})")
    assert proc.returncode != 0
    assert "backend 'openvino' needs the Python package 'openvino'" in proc.stderr
    assert "pip install 'edgevision[openvino]'" in proc.stderr
    # an artifact folder falls back to a variant whose backend is installed
    proc = _without(["onnxruntime"], f"import edgevision\nprint(edgevision.load({str(root)!r}).name)")
    assert proc.returncode == 0 and proc.stdout.strip() == "openvino-fp32", proc.stderr


@pytest.mark.parametrize("variant", ["onnxruntime-fp32", "openvino-fp32"])
def test_runner_names_the_input_a_wrong_feed_breaks(unet_artifact, variant: str) -> None:  # noqa: ANN001
    """Issue 16: a runner checks feed names, fixed dimensions and dtypes against the graph's inputs."""
    _, root = unet_artifact
    with edgevision.load(root / variant) as model:
        good = np.zeros((2, 3, 64, 64), np.float32)
        assert model.runner.infer({"images": good})  # dynamic batch: 2 is fine
        cases = [({"pixels": good}, "got ['pixels'], the graph takes ['images']"),
                 ({"images": good[:, :, :32]}, "shape 2x3x32x64, the graph takes ?x3x64x64"),
                 ({"images": good[0]}, "shape 3x64x64, the graph takes ?x3x64x64"),
                 ({"images": good.astype(np.float64)}, "dtype float64, the graph takes float32")]
        for feeds, message in cases:
            with pytest.raises(InputError, match=re.escape(message)):
                model.runner.infer(feeds)
