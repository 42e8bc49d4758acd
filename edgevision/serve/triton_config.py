"""Triton model configurations (config.pbtxt), built as Triton's own protobuf schema and checked against it.

The messages come from `tritonclient.grpc.model_config_pb2` (Triton's model_config.proto), so a
configuration that this module writes cannot name a field Triton does not have; `parse` reads a
config.pbtxt back through the same schema (export and tests both use it).

Two kinds of model serve an artifact's variant (parameter `edgevision_kind`):
- `pipeline` (Python backend): an encoded image (`image`, BYTES) or a raw uint8 frame (`frame`, HxWx3) in;
  edgevision's own pre-processing, engine and post-processing inside; results in original-image pixels
  out, one image per request (dynamic batching gathers requests into engine batches).
- `engine`: the variant's graph itself (native ONNX Runtime / OpenVINO / TensorRT backends, or the Python
  backend running edgevision's runner): the pre-processed tensor in, the graph's output contract out; the
  client pre- and post-processes (`edgevision.load("grpc://.../MODEL")` does both the same way).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from edgevision.errors import ArtifactError, BackendNotInstalled
from edgevision.records import ModelInfo
from edgevision.tasks import DETECTION_TASKS

KIND = "edgevision_kind"
MODEL_INFO = "edgevision_model"  # the ModelInfo JSON: what a client needs to pre- and post-process
VARIANT = "edgevision_variant"
FORMAT_VERSION = 1

_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32",
          "uint8": "TYPE_UINT8", "int8": "TYPE_INT8", "bool": "TYPE_BOOL", "bytes": "TYPE_STRING"}
NUMPY_TYPES = {v: k for k, v in _TYPES.items() if k != "bytes"}

Tensor = Tuple[str, str, Sequence[int]]  # name, numpy dtype name ("bytes" for BYTES), dims without the batch


def schema() -> Any:
    """Triton's model_config_pb2, or a clear error naming the extra that brings it."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise BackendNotInstalled("triton", "tritonclient", "triton") from None
    return model_config_pb2


def pipeline_outputs(info: ModelInfo) -> List[Tensor]:
    """What a pipeline model answers per image, by task (dims without the batch dimension)."""
    if info.task == "classification":
        return [("scores", "float32", [len(info.labels) or -1])]
    if info.task == "segmentation":
        return [("label_map", "uint8" if len(info.labels) <= 256 else "int32", [-1, -1])]
    if info.task not in DETECTION_TASKS:
        raise ArtifactError(f"task {info.task!r} has no Triton pipeline outputs")
    out: List[Tensor] = [("boxes", "float32", [-1, 4]), ("scores", "float32", [-1]), ("class_ids", "int64", [-1])]
    if info.task == "instance_segmentation":
        out.append(("masks", "bool", [-1, -1, -1]))
    if info.task == "keypoints":
        out += [("keypoints", "float32", [-1, -1, 3]), ("keypoint_scores", "float32", [-1, -1])]
    if info.task == "oriented_detection":
        out.append(("rotated", "float32", [-1, 5]))
    return out


def pipeline_config(name: str, info: ModelInfo, variant: str, *, max_batch: int, instances: int, threads: int,
                    queue_delay_us: Optional[int]) -> Any:
    """A Python-backend model running edgevision's runtime: images in, results out."""
    m = schema()
    config = m.ModelConfig(name=name, backend="python", max_batch_size=max_batch)
    config.input.add(name="image", data_type=m.TYPE_STRING, dims=[1], optional=True)  # encoded (JPEG, PNG...)
    config.input.add(name="frame", data_type=m.TYPE_UINT8, dims=[-1, -1, 3], optional=True)  # raw, RGB or BGR
    for out_name, dtype, dims in pipeline_outputs(info):
        config.output.add(name=out_name, data_type=m.DataType.Value(_TYPES[dtype]), dims=list(dims))
    _common(config, m, info, variant, "pipeline", instances, queue_delay_us)
    config.parameters["threads"].string_value = str(threads)
    height, width = info.input.size
    warm = config.model_warmup.add(name="frame", batch_size=1)
    warm.inputs["frame"].data_type = m.TYPE_UINT8
    warm.inputs["frame"].dims.extend([height, width, 3])
    warm.inputs["frame"].random_data = True
    return config


def engine_config(name: str, info: ModelInfo, variant: str, engine: Dict[str, str], inputs: Sequence[Tensor],
                  outputs: Sequence[Tensor], *, instances: int, queue_delay_us: Optional[int],
                  threads: Optional[int] = None) -> Any:
    """The variant's graph as a Triton model: `engine` is {"platform": ...} or {"backend": ...} (+ the
    model file name); inputs and outputs without the batch dimension, from the graph itself."""
    m = schema()
    config = m.ModelConfig(name=name, max_batch_size=info.max_batch, **engine)
    for tensor_name, dtype, dims in inputs:
        config.input.add(name=tensor_name, data_type=m.DataType.Value(_TYPES[dtype]), dims=list(dims))
    for tensor_name, dtype, dims in outputs:
        config.output.add(name=tensor_name, data_type=m.DataType.Value(_TYPES[dtype]), dims=list(dims))
    _common(config, m, info, variant, "engine", instances, queue_delay_us if info.max_batch > 1 else None)
    if threads is not None:
        config.parameters["threads"].string_value = str(threads)
    warm = config.model_warmup.add(name="zeros", batch_size=1)
    for tensor_name, dtype, dims in inputs:
        warm.inputs[tensor_name].data_type = m.DataType.Value(_TYPES[dtype])
        warm.inputs[tensor_name].dims.extend([d if d > 0 else 1 for d in dims])
        warm.inputs[tensor_name].zero_data = True
    return config


def _common(config: Any, m: Any, info: ModelInfo, variant: str, kind: str, instances: int,
            queue_delay_us: Optional[int]) -> None:
    config.instance_group.add(kind=m.ModelInstanceGroup.KIND_CPU, count=instances)
    if queue_delay_us is not None:
        config.dynamic_batching.SetInParent()  # present even with the default delay 0
        config.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
    config.parameters[KIND].string_value = kind
    config.parameters[VARIANT].string_value = variant
    config.parameters[MODEL_INFO].string_value = json.dumps(info.to_json(), sort_keys=True)
    config.parameters["edgevision_format"].string_value = str(FORMAT_VERSION)


def to_text(config: Any) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def parse(path: Path) -> Any:
    """A config.pbtxt read through Triton's schema, or an ArtifactError naming the file and the field."""
    from google.protobuf import text_format

    try:
        return text_format.Parse(Path(path).read_text(), schema().ModelConfig())
    except text_format.ParseError as e:
        raise ArtifactError(f"{path}: not a valid Triton model configuration ({e})") from None


def parameter(config: Any, key: str) -> Optional[str]:
    return config.parameters[key].string_value if key in config.parameters else None


def model_info(config: Any, where: str) -> ModelInfo:
    """The ModelInfo an edgevision model's configuration carries (clients read it from the server)."""
    text = parameter(config, MODEL_INFO)
    if text is None:
        raise ArtifactError(f"{where}: not an edgevision model (its configuration has no '{MODEL_INFO}' parameter); "
                            "serve a repository written by `edgevision export triton`")
    try:
        return ModelInfo.from_json(json.loads(text))
    except (ValueError, TypeError) as e:
        raise ArtifactError(f"{where}: its '{MODEL_INFO}' parameter is malformed ({e})") from None
