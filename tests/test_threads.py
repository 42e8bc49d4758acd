"""One predictor, several threads: every runner that can run here gives each caller its own
result, identical to a single-threaded run (issue 13, item 2; the Predictor's thread-safety contract, docs/ARCHITECTURE.md)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import edgevision
from edgevision.data import ShapesDataset
from edgevision.runtime.predictor import Predictor

THREADS, CALLS = 4, 100
SSD_EXTRA = {"export": {"nms": {"score_threshold": 0.3}}}


def _images() -> list[np.ndarray]:
    sizes = [(120, 200), (160, 160), (90, 150), (200, 120), (140, 180), (100, 100)]
    return [ShapesDataset(1, seed=20 + i, size=s)[0].image for i, s in enumerate(sizes)]


def _key(result) -> tuple:  # noqa: ANN001
    d = result.to_dict()
    return json.dumps(d, sort_keys=True, default=lambda a: np.asarray(a).tolist())


def _hammer(model: Predictor) -> None:
    images = _images()
    expected = [_key(model.predict(im)) for im in images]  # single-threaded
    assert len(set(expected)) == len(images)  # every image has its own answer: a mix-up cannot hide

    def work(t: int) -> list[tuple[int, str]]:
        out = []
        for k in range(CALLS):
            i = (t * 5 + k) % len(images)
            out.append((i, _key(model.predict(images[i]))))
        return out

    with ThreadPoolExecutor(THREADS) as pool:
        runs = list(pool.map(work, range(THREADS)))
    assert sum(len(r) for r in runs) == THREADS * CALLS
    wrong = [(t, i) for t, r in enumerate(runs) for i, got in r if got != expected[i]]
    assert not wrong, f"{len(wrong)} of {THREADS * CALLS} concurrent predictions differ from the single-threaded ones"


@pytest.mark.parametrize("variant", ["onnxruntime-fp32", "openvino-fp32"])
def test_detector_predictor_is_thread_safe(compiled, variant: str) -> None:  # noqa: ANN001
    _, root = compiled("ssdlite", "detection", "ssdlite320_mobilenet_v3_large", 160, **SSD_EXTRA)
    with edgevision.load(root / variant) as model:
        assert len(model.predict(_images()[0])) > 0  # something to compare
        _hammer(model)


@pytest.mark.parametrize("variant", ["openvino-fp32", "openvino-bf16"])
def test_segmentation_predictor_is_thread_safe(unet_artifact, variant: str) -> None:  # noqa: ANN001
    _, root = unet_artifact
    with edgevision.load(root / variant) as model:
        _hammer(model)


@pytest.mark.slow
def test_pytorch_reference_predictor_is_thread_safe(compiled) -> None:  # noqa: ANN001
    from edgevision.artifact import read_manifest
    from edgevision.verify.reference import reference_predictor

    _, root = compiled("ssdlite", "detection", "ssdlite320_mobilenet_v3_large", 160, **SSD_EXTRA)
    with reference_predictor(read_manifest(root), threads=2) as model:
        _hammer(model)


def test_tensorrt_variant_emulated_on_cpu_is_thread_safe(compiled) -> None:  # noqa: ANN001
    from edgevision.artifact import read_variant
    from edgevision.builders import open_runner

    _, root = compiled("ssdlite_trt", "detection", "ssdlite320_mobilenet_v3_large", 160,
                       export={"nms": {"score_threshold": 0.3}}, targets=[{"backend": "onnxruntime"}, {"backend": "tensorrt"}])
    vdir = root / "tensorrt-fp32"
    found = read_variant(vdir)
    runner, note = open_runner(found.variant, vdir, threads=2)
    assert "emulation" in note
    with Predictor(found.info, runner, found.variant, path=vdir) as model:
        _hammer(model)


def test_openvino_compiles_static_shapes_per_batch_size(compiled) -> None:  # noqa: ANN001
    """The IR keeps its dynamic batch; the runner compiles [1,3,160,160] and [3,3,160,160] on
    demand, and an artifact that asks for dynamic shapes runs the model as saved."""
    _, root = compiled("ssdlite", "detection", "ssdlite320_mobilenet_v3_large", 160, **SSD_EXTRA)
    images = _images()
    with edgevision.load(root / "openvino-fp32") as model:
        assert model.runner.compiled_shapes == [{"images": (1, 3, 160, 160)}]
        one = [model.predict(im) for im in images[:3]]
        three = model.predict(images[:3])
        assert model.runner.compiled_shapes == [{"images": (1, 3, 160, 160)}, {"images": (3, 3, 160, 160)}]
    for a, b in zip(one, three):  # batch 3 finds what batch 1 finds
        assert len(a) > 0 and a.class_ids.tolist() == b.class_ids.tolist()
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
    from edgevision.backends.openvino import Runner

    vdir = root / "openvino-fp32"
    settings = {**json.loads((vdir / "variant.json").read_text())["settings"], "dynamic_shapes": True}
    dynamic = Runner({"model": vdir / "model.xml"}, settings, threads=2)
    assert dynamic.compiled_shapes == [None]
    feeds = {"images": np.random.default_rng(0).normal(size=(2, 3, 160, 160)).astype(np.float32)}
    static = Runner({"model": vdir / "model.xml"}, {**settings, "dynamic_shapes": False}, threads=2)
    a, b = dynamic.infer(feeds), static.infer(feeds)
    assert int(a["num_dets"].sum()) > 0
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-4)
