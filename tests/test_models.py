from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgevision.errors import ModelSourceError
from edgevision.models.sources import build_model
from edgevision.recipe import ModelSpec


def test_own_models_and_torchvision_builders() -> None:
    unet = build_model(ModelSpec(source="unet", num_classes=3, kwargs={"width": 4, "depth": 2}))
    assert unet(torch.zeros(1, 3, 36, 52)).shape == (1, 3, 36, 52)  # any size: decoder follows the skips
    segnet = build_model(ModelSpec(source="segnet", num_classes=5, kwargs={"width": 4}))
    assert segnet(torch.zeros(2, 3, 32, 32)).shape == (2, 5, 32, 32)
    tv = build_model(ModelSpec(source="mobilenet_v3_small", labels=["a", "b"]))
    assert tv(torch.zeros(1, 3, 64, 64)).shape == (1, 2)


def test_unknown_builder_suggests_close_names() -> None:
    with pytest.raises(ModelSourceError) as e:
        build_model(ModelSpec(source="resnet19", num_classes=2))
    assert "'resnet19'" in str(e.value) and "did you mean" in str(e.value) and "'resnet18'" in str(e.value)


def test_module_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mymodels.py").write_text(
        "import torch\ndef tiny(num_classes):\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))\n"
        "not_callable = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert isinstance(build_model(ModelSpec(source="mymodels:tiny", num_classes=4)), torch.nn.Sequential)
    with pytest.raises(ModelSourceError, match="no callable 'not_callable'"):
        build_model(ModelSpec(source="mymodels:not_callable"))
    with pytest.raises(ModelSourceError, match="cannot import module 'nomodule'"):
        build_model(ModelSpec(source="nomodule:f"))


@pytest.mark.parametrize("wrap", ["plain", "model", "state_dict", "ddp"])
def test_checkpoint_wrappers_load(tmp_path: Path, wrap: str) -> None:
    spec = ModelSpec(source="unet", num_classes=2, kwargs={"width": 2, "depth": 1})
    src = build_model(spec)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(1.0)
    state = src.state_dict()
    obj = {"plain": state, "model": {"model": state, "epoch": 3}, "state_dict": {"state_dict": state},
           "ddp": {f"module.{k}": v for k, v in state.items()}}[wrap]
    torch.save(obj, tmp_path / "c.pt")
    loaded = build_model(spec.model_copy(update={"checkpoint": tmp_path / "c.pt"}))
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_checkpoint_mismatch_lists_keys(tmp_path: Path) -> None:
    small = build_model(ModelSpec(source="unet", num_classes=2, kwargs={"width": 2, "depth": 1}))
    torch.save(small.state_dict(), tmp_path / "c.pt")
    spec = ModelSpec(source="unet", num_classes=3, kwargs={"width": 2, "depth": 2}, checkpoint=tmp_path / "c.pt")
    with pytest.raises(ModelSourceError) as e:
        build_model(spec)
    msg = str(e.value)
    assert "missing keys" in msg and "down.1." in msg
    assert "shape mismatch" in msg and "vs model" in msg and "more" in msg


def test_checkpoint_missing_or_not_a_state_dict(tmp_path: Path) -> None:
    spec = ModelSpec(source="unet", num_classes=2, checkpoint=tmp_path / "nope.pt")
    with pytest.raises(ModelSourceError, match="file not found"):
        build_model(spec)
    torch.save({"epoch": 3}, tmp_path / "bad.pt")
    with pytest.raises(ModelSourceError, match="no state_dict found"):
        build_model(spec.model_copy(update={"checkpoint": tmp_path / "bad.pt"}))
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(ModelSourceError, match="weights_only=True"):
        build_model(spec.model_copy(update={"checkpoint": tmp_path / "junk.pt"}))

