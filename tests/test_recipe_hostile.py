"""Recipes written carelessly or with intent: every one gets a short, clean RecipeError naming the
file and field, at load time, or loads into a recipe that round-trips (issue 13, items 4-7)."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgevision.errors import RecipeError
from edgevision.recipe import Recipe, json_schema, load_recipe, parse_recipe
from edgevision.recipe_yaml import parse_yaml

MAX_MESSAGE = 4000  # characters: what any recipe error may print at most
BASE = {
    "name": "r",
    "task": "detection",
    "model": {"source": "ssdlite320_mobilenet_v3_large", "labels": ["bg", "a"], "kwargs": {"x": 1}},
    "input": {"size": [64, 64], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    "export": {"nms": {"score_threshold": 0.3}},
    "targets": [{"backend": "onnxruntime"}, {"backend": "openvino", "precision": "int8", "options": {"num_streams": 1}}],
    "data": {"train": {"source": "shapes", "count": 10, "seed": 1}, "val": {"source": "folder", "path": "val"}},
    "train": {"epochs": 1, "batch": 2, "lr": 0.01},
    "calibration": {"source": "shapes", "count": 4, "seed": 2},
    "verify": {"images": 2},
    "output": "build/r",
}


def _load(tmp_path: Path, text: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    assert time.perf_counter() - start < 5
    message = str(e.value)
    assert message.startswith(str(path)) and len(message) < MAX_MESSAGE, message[:300]
    return message


def _billion_laughs(levels: int = 9) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("field", ["labels", "kwargs", "options"])
def test_alias_bombs_are_refused_quickly_with_a_short_message(tmp_path: Path, field: str) -> None:
    bomb = _billion_laughs()
    where = {"labels": "model:\n  source: unet\n  labels: *a8\n", "kwargs": "model:\n  source: unet\n  kwargs: {k: *a8}\n",
             "options": "targets:\n  - backend: openvino\n    options: {o: *a8}\n"}[field]
    message = _load(tmp_path, bomb + "name: r\ntask: segmentation\n" + where)
    assert "expands (through YAML aliases)" in message
    # a few aliases are still fine (YAML users reuse blocks)
    ok = {k: v for k, v in BASE.items() if k not in ("data", "train", "calibration", "targets")}
    recipe = tmp_path / "ok.yaml"
    recipe.write_text(yaml.safe_dump(ok) + "targets:\n  - &t {backend: onnxruntime, options: {}}\n  - {<<: *t, precision: int8}\n"
                      "calibration: {source: shapes, count: 4}\n")
    assert [t.variant for t in load_recipe(recipe).targets] == ["onnxruntime-fp32", "onnxruntime-int8"]


def test_deep_nesting_huge_integers_and_duplicate_keys_are_clean_errors(tmp_path: Path) -> None:
    assert "nested deeper than 32 levels" in _load(tmp_path, "name: r\nmodel: {kwargs: {k: " + "[" * 1500 + "]" * 1500 + "}}\n")
    assert "too many digits" in _load(tmp_path, "name: r\ntask: detection\nverify: {images: " + "7" * 4301 + "}\n")
    msg = _load(tmp_path, "name: r\ntask: detection\nname: s\n")
    assert "line 3: duplicate key 'name' (first given on line 1)" in msg
    assert "duplicate key 'backend'" in _load(tmp_path, "targets:\n  - {backend: onnxruntime, backend: openvino}\n")


def test_values_no_run_can_use_are_refused_naming_the_field(tmp_path: Path) -> None:
    cases = {
        "input.mean": [float("nan"), 0.5, 0.5], "input.std": [1e-308, 0.2, 0.2], "train.lr": float("inf"),
        "train.epochs": 2**31, "train.batch": 2**40, "data.train.count": 2**31, "calibration.seed": -1,
        "train.seed": 2**63, "data.train.seed": 2**64, "model.checkpoint": "a\x00b.pt", "output": "  ",
        "data.val.path": "", "model.labels": ["bg", ""], "benchmark.duration": 1e308,
    }
    for field, value in cases.items():
        data = json.loads(json.dumps(BASE))
        *parents, last = field.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
        with pytest.raises(RecipeError) as e:
            parse_recipe(data, source="r.yaml")
        assert str(e.value).startswith(f"r.yaml: {field}"), (field, str(e.value))
        assert len(str(e.value)) < 500


def test_a_long_value_is_quoted_abridged(tmp_path: Path) -> None:
    message = _load(tmp_path, "name: r\ntask: " + "x" * 100_000 + "\n")
    line = next(line for line in message.splitlines() if ": task: " in line)
    assert "task: 'xxxx" in line and "is not one of classification" in line and len(line) < 400


def test_a_folder_fifo_or_device_as_the_recipe_says_what_it_is(tmp_path: Path) -> None:
    assert "is a directory" in _error_of(tmp_path)
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    with pytest.raises(RecipeError, match="is a FIFO, not a recipe file"):
        load_recipe(fifo)  # answered at once: a FIFO is never opened
    with pytest.raises(RecipeError, match="is a device, not a recipe file"):
        load_recipe(Path("/dev/null"))
    big = tmp_path / "big.yaml"
    big.write_text("#" * (2 << 20))
    with pytest.raises(RecipeError, match="too large for a recipe"):
        load_recipe(big)


def _error_of(path: Path) -> str:
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    return str(e.value)


# --- property-based: at least 1,000 generated recipes per run --------------------------------

_PATHS = [("name",), ("task",), ("model",), ("model", "source"), ("model", "labels"), ("model", "kwargs"),
          ("model", "num_classes"), ("model", "checkpoint"), ("input",), ("input", "size"), ("input", "mean"),
          ("input", "std"), ("input", "resize"), ("input", "pad_value"), ("export",), ("export", "opset"),
          ("export", "nms"), ("export", "nms", "score_threshold"), ("export", "nms", "max_detections"),
          ("targets",), ("targets", 0), ("targets", 0, "backend"), ("targets", 1, "precision"), ("targets", 1, "options"),
          ("data",), ("data", "train", "count"), ("data", "train", "seed"), ("data", "val", "path"),
          ("train", "epochs"), ("train", "lr"), ("train", "seed"), ("calibration", "count"), ("calibration", "seed"),
          ("calibration", "method"), ("verify", "images"), ("verify", "max_drop"), ("verify", "tolerances"),
          ("benchmark", "batch_sizes"), ("benchmark", "duration"), ("output",), ("unknown_key",)]

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from([0, 1, -1, 2**31, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, -1e308, 1e-308, 0.0, 0.5]),
    st.text(max_size=30), st.sampled_from(["", " ", "\x00", "a\x00b", "..", "/", ".", "x" * 5000, "fp32", "int8", "unet"]))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                          st.dictionaries(st.text(max_size=8), inner, max_size=5)),
                       max_leaves=12)


def _mutate(data: dict, path: tuple, value: object, delete: bool) -> dict:
    data = json.loads(json.dumps(data))
    node = data
    for key in path[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(key, {})
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return data
    last = path[-1]
    if isinstance(node, dict):
        if delete:
            node.pop(last, None)
        else:
            node[last] = value
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        node[last] = value
    return data


def _check(data: object, via_yaml: bool) -> None:
    start = time.perf_counter()
    try:
        if via_yaml:
            text = yaml.safe_dump(data, allow_unicode=True)
            data = parse_yaml(text, "fuzz.yaml")
        recipe = parse_recipe(data, source="fuzz.yaml") if isinstance(data, dict) else None
    except RecipeError as e:
        assert len(str(e)) < MAX_MESSAGE and str(e).startswith("fuzz.yaml")
    else:
        if recipe is not None:  # a valid recipe round-trips through its digest and the JSON schema
            dumped = recipe.model_dump(mode="json")
            jsonschema.validate(dumped, json_schema())
            assert Recipe.model_validate(dumped).digest() == recipe.digest()
            assert all(math.isfinite(v) for v in (*recipe.input.mean, *recipe.input.std))
    assert time.perf_counter() - start < 1.0


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(mutations=st.lists(st.tuples(st.sampled_from(_PATHS), _values, st.booleans()), min_size=1, max_size=4),
       via_yaml=st.booleans())
def test_fuzzed_recipes_load_or_fail_cleanly(mutations: list, via_yaml: bool) -> None:
    data = BASE
    for path, value, delete in mutations:
        data = _mutate(data, path, value, delete)
    _check(data, via_yaml)
