"""Nothing is unpickled before the recipe is validated, and only with a real boolean consent
(issue 26, item 1): a quoted "false" used to be a non-empty string, so truthy, so consent.

The checkpoint here is a real malicious pickle: loading it writes a marker file."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgevision.errors import ModelSourceError, RecipeError
from edgevision.recipe import Recipe, load_recipe, parse_recipe


class _Payload:
    """Unpickling this calls Path.write_text(marker, "pwned"): code from the file runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.write_text, (self.marker, "pwned"))


def _malicious_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker, checkpoint = tmp_path / "marker.txt", tmp_path / "best.pt"
    checkpoint.write_bytes(pickle.dumps({"model": _Payload(marker), "train_args": {"imgsz": 64}}))
    return checkpoint, marker


def _recipe(tmp_path: Path, trust: str, extra: str = "") -> Path:
    checkpoint, _ = _malicious_checkpoint(tmp_path)
    path = tmp_path / "recipe.yaml"
    path.write_text(f"name: r\nmodel: {{source: ultralytics, checkpoint: {checkpoint}, trust_checkpoint: {trust}}}\n"
                    f"targets: [{{backend: onnxruntime}}]\n{extra}")
    return path


@pytest.mark.parametrize("trust", ['"false"', '"no"', '"0"', "'False'", '"true"', "0", "1", "[]", "{}", "null", "1.0"])
def test_anything_but_a_yaml_boolean_is_an_error_naming_the_field(tmp_path: Path, trust: str) -> None:
    path = _recipe(tmp_path, trust)
    with pytest.raises(RecipeError, match=r"model\.trust_checkpoint") as e:
        load_recipe(path)
    assert str(e.value).startswith(str(path)) and "Traceback" not in str(e.value)
    assert not (tmp_path / "marker.txt").exists()


def test_false_refuses_and_true_really_unpickles(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="loading one runs code from the file"):
        load_recipe(_recipe(tmp_path, "false"))
    assert not (tmp_path / "marker.txt").exists()
    with pytest.raises(ModelSourceError):  # consent given: the pickle runs (then it is no Ultralytics model)
        load_recipe(_recipe(tmp_path, "true"))
    assert (tmp_path / "marker.txt").read_text() == "pwned"  # so the refusals above refused something real


def test_no_source_is_read_while_another_section_is_invalid(tmp_path: Path) -> None:
    """Consent given, but the recipe has an error elsewhere: the error, and no unpickling."""
    for extra in ("verify: {images: many}\n", "export: {dynamic_batch: \"yes\"}\n", "unknown: 1\n"):
        with pytest.raises(RecipeError):
            load_recipe(_recipe(tmp_path, "true", extra))
        assert not (tmp_path / "marker.txt").exists(), extra


def _fields(model: Any, kind: type, prefix: str = "") -> list[str]:
    """Dotted paths of the recipe's fields whose type is `kind` (bool or int), nested sections included."""
    from pydantic import BaseModel

    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        args = [a for a in getattr(ann, "__args__", ()) if a is not type(None)] or [ann]
        if any(a is kind for a in args):
            out.append(prefix + name)
        for a in args:
            if isinstance(a, type) and issubclass(a, BaseModel):
                out.extend(_fields(a, kind, f"{prefix}{name}."))
    return out


BOOLS, INTS = _fields(Recipe, bool), _fields(Recipe, int)
BASE = {"name": "r", "task": "detection", "model": {"source": "ssdlite320_mobilenet_v3_large", "labels": ["bg", "a"]},
        "input": {"size": [64, 64]}, "targets": [{"backend": "onnxruntime"}], "train": {"epochs": 1},
        "data": {"train": {"source": "shapes", "count": 4}, "val": {"source": "shapes", "count": 4}},
        "calibration": {"source": "shapes", "count": 4}}


def _with(path: str, value: Any) -> dict:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    node = data
    *parents, leaf = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return data


def test_the_strict_fields_are_found() -> None:
    assert {"model.trust_checkpoint", "export.dynamic_batch", "calibration.accuracy_control"} <= set(BOOLS)
    assert {"verify.images", "train.epochs", "export.opset"} <= set(INTS)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(field=st.sampled_from(BOOLS + INTS), value=st.one_of(
    st.sampled_from(["true", "false", "yes", "no", "0", "1", "8", "on", "off", ""]), st.floats(allow_nan=False),
    st.lists(st.booleans(), max_size=2), st.just(None)))
def test_bools_and_ints_take_only_their_own_type(field: str, value: Any) -> None:
    """A string, a float or a list where a bool or an int belongs is an error naming the field (a bool is
    no int either); the field's own type loads."""
    if value is None:  # null: the default, where the field has one
        return
    with pytest.raises(RecipeError, match=field.replace(".", r"\.")):
        parse_recipe(_with(field, value))
    if field not in BOOLS:
        with pytest.raises(RecipeError, match=field.replace(".", r"\.")):
            parse_recipe(_with(field, True))


@pytest.mark.parametrize("field", BOOLS)
def test_yaml_booleans_load(field: str) -> None:
    recipe = parse_recipe(_with(field, True))
    node: Any = recipe
    for part in field.split("."):
        node = getattr(node, part)
    assert node is True
