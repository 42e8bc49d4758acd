from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import recipe_dict
from edgevision.errors import RecipeError
from edgevision.recipe import json_schema, load_recipe, parse_recipe

ROOT = Path(__file__).resolve().parents[1]

BASE = {
    "name": "r",
    "task": "segmentation",
    "model": {"source": "unet", "labels": ["bg", "a"]},
    "input": {"size": [64, 64]},
    "targets": [{"backend": "onnxruntime"}],
}


def _write(tmp_path: Path, data: object, name: str = "recipe.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def _error(tmp_path: Path, data: object) -> str:
    with pytest.raises(RecipeError) as e:
        load_recipe(_write(tmp_path, data))
    return str(e.value)


def _with(path: str, value: object) -> dict:
    d = json.loads(json.dumps(BASE))
    *parents, last = path.split(".")
    node = d
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return d


def test_valid_recipe_gets_defaults(tmp_path: Path) -> None:
    r = load_recipe(_write(tmp_path, BASE))
    assert r.input.size == (64, 64)
    assert r.targets[0].variant == "onnxruntime-fp32"
    assert r.output_dir == Path("build/r")
    assert r.export.exporter == "dynamo" and r.export.opset == 18
    assert r.model.classes == 2


def test_square_size_shorthand(tmp_path: Path) -> None:
    assert load_recipe(_write(tmp_path, _with("input.size", 96))).input.size == (96, 96)


def test_bad_precision_names_file_field_and_choices(tmp_path: Path) -> None:
    d = _with("targets", [{"backend": "onnxruntime"}, {"backend": "openvino", "precision": "int4"}])
    msg = _error(tmp_path, d)
    assert msg == f"{tmp_path / 'recipe.yaml'}: targets[1].precision: 'int4' is not one of fp32, fp16, bf16, int8"


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    d = _with("train", {"epocs": 3})
    d["data"] = {"train": {"source": "shapes", "count": 4}}
    assert "train.epocs: unknown key 'epocs' (did you mean 'epochs'?)" in _error(tmp_path, d)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    d = dict(BASE, target=[{"backend": "openvino"}])
    assert "unknown key 'target' (did you mean 'targets'?)" in _error(tmp_path, d)


def test_wrong_type_names_field(tmp_path: Path) -> None:
    msg = _error(tmp_path, _with("verify", {"images": "many"}))
    assert "verify.images:" in msg and "'many'" in msg


def test_unknown_backend(tmp_path: Path) -> None:
    msg = _error(tmp_path, _with("targets", [{"backend": "tflite"}]))
    assert "targets[0].backend: 'tflite' is not one of onnxruntime, openvino, tensorrt" in msg


def test_precision_not_built_by_backend(tmp_path: Path) -> None:
    msg = _error(tmp_path, _with("targets", [{"backend": "onnxruntime", "precision": "bf16"}]))
    assert "targets[0]" in msg and "does not build precision 'bf16'" in msg


def test_missing_required_field(tmp_path: Path) -> None:
    d = dict(BASE)
    del d["task"]
    assert "task: required field is missing" in _error(tmp_path, d)


def test_labels_and_num_classes_disagree(tmp_path: Path) -> None:
    msg = _error(tmp_path, _with("model.num_classes", 5))
    assert "model:" in msg and "num_classes is 5 but labels has 2" in msg


def test_duplicate_variant(tmp_path: Path) -> None:
    assert "listed twice" in _error(tmp_path, _with("targets", [{"backend": "openvino"}, {"backend": "openvino"}]))


def test_benchmark_batch_sizes(tmp_path: Path) -> None:
    data = _with("benchmark", {"batch_sizes": [8, 1, 8]})
    assert load_recipe(_write(tmp_path, data)).benchmark.batch_sizes == [1, 8]
    data["export"] = {"dynamic_batch": False}
    msg = _error(tmp_path, data)
    assert "benchmark.batch_sizes" in msg and "dynamic_batch" in msg
    assert "between 1 and 64" in _error(tmp_path, _with("benchmark", {"batch_sizes": [0]}))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_malformed_yaml_gives_line(tmp_path: Path) -> None:
    msg = _error(tmp_path, "name: x\ntask: [unclosed\n")
    assert "invalid YAML" in msg and "line" in msg


def test_not_a_mapping(tmp_path: Path) -> None:
    assert "must be a mapping" in _error(tmp_path, "- a\n- b\n")


def test_shapes_source_needs_count(tmp_path: Path) -> None:
    d = dict(BASE, data={"val": {"source": "shapes"}})
    assert "data.val" in _error(tmp_path, d)


def test_digest_changes_with_content(tmp_path: Path) -> None:
    a = load_recipe(_write(tmp_path, BASE, "a.yaml"))
    b = load_recipe(_write(tmp_path, _with("input.size", [64, 96]), "b.yaml"))
    assert a.digest() != b.digest() and a.digest() == load_recipe(tmp_path / "a.yaml").digest()


def test_json_schema_is_valid_and_accepts_shipped_recipes() -> None:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
        load_recipe(path)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(dict(BASE, bogus=1), schema)


def test_backend_option_typo_fails_at_load_with_a_suggestion(tmp_path: Path) -> None:
    """Issue 16: a misspelt target option fails when the recipe loads (before any training or export)."""
    data = recipe_dict("typo", "detection", "yolo", 64, tmp_path,
                       targets=[{"backend": "onnxruntime", "precision": "fp32"},
                                {"backend": "openvino", "precision": "fp32", "options": {"dynamic_shape": True, "zzz": 1}}])
    with pytest.raises(RecipeError) as failure:
        parse_recipe(data)
    message = str(failure.value)
    assert "targets.1" in message or "targets[1]" in message, message
    assert "openvino has no option 'dynamic_shape' (did you mean 'dynamic_shapes'?), 'zzz'" in message
    assert "its options: performance_hint, num_streams, dynamic_shapes" in message
    data["targets"][1]["options"] = {"dynamic_shapes": True}
    assert parse_recipe(data).targets[1].options == {"dynamic_shapes": True}
