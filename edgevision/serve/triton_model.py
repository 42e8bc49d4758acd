"""The Python-backend model of an edgevision Triton repository: `edgevision export triton` copies this file
to <model>/1/model.py, beside the variant folder it serves (<model>/1/variant).

It runs inside Triton's Python backend stub, which provides `triton_python_backend_utils`; the Python
that runs it needs edgevision's runtime and the variant's backend (pip install 'edgevision[onnxruntime]'
or '[openvino]' in the server's environment). Two kinds (config parameter `edgevision_kind`):
- pipeline: per request one image, `image` (encoded bytes) or `frame` (HxWx3 uint8, request parameter
  channel_order 'rgb' or 'bgr'); every request of an execute() goes through one predict() call, so the
  engine gets the batches that Triton's dynamic batcher formed. Results in original-image pixels.
- engine: the graph's input tensors in, its output tensors out (a client pre- and post-processes).
A bad request gets a Triton error naming its input; the other requests of the batch are answered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend

from edgevision.errors import EdgeVisionError, InputError
from edgevision.runtime import load
from edgevision.runtime.images import MAX_PIXELS, array_to_rgb, decode_image


class TritonPythonModel:
    def initialize(self, args: Dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.kind = params.get("edgevision_kind", "pipeline")
        threads = int(params.get("threads") or 0) or None
        self.max_pixels = int(params.get("max_pixels") or MAX_PIXELS)
        folder = Path(args["model_repository"]) / args["model_version"] / "variant"
        self.predictor = load(folder, threads=threads)
        self.outputs = {o["name"]: pb_utils.triton_string_to_numpy(o["data_type"]) for o in config["output"]}

    def execute(self, requests: List[Any]) -> List[Any]:
        if self.kind == "engine":
            return [self._engine(r) for r in requests]
        images: List[Optional[np.ndarray]] = []
        errors: List[Optional[str]] = []
        for request in requests:
            try:
                images.append(self._image(request))
                errors.append(None)
            except EdgeVisionError as e:
                images.append(None)
                errors.append(str(e))
        good = [im for im in images if im is not None]
        try:
            results = iter(self.predictor.predict(good, top_k=max(1, len(self.predictor.labels)),
                                                  max_pixels=self.max_pixels) if good else [])
        except EdgeVisionError as e:
            return [pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(e))) for _ in requests]
        return [pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(err)) if err is not None
                else pb_utils.InferenceResponse(output_tensors=self._tensors(next(results), image))
                for err, image in zip(errors, images)]

    def _image(self, request: Any) -> np.ndarray:
        params = json.loads(request.parameters() or "{}")
        encoded = pb_utils.get_input_tensor_by_name(request, "image")
        frame = pb_utils.get_input_tensor_by_name(request, "frame")
        if (encoded is None) == (frame is None):
            raise InputError("give exactly one of the inputs 'image' (encoded bytes) or 'frame' (HxWx3 uint8)")
        max_pixels = min(int(params.get("max_pixels", self.max_pixels)), self.max_pixels)
        if encoded is not None:
            data = encoded.as_numpy().reshape(-1)
            if data.size != 1:
                raise InputError(f"input 'image': one encoded image per request, got {data.size}")
            return decode_image(bytes(data[0]), max_pixels, what="input 'image'")
        pixels = frame.as_numpy()
        if pixels.shape[0] != 1:
            raise InputError(f"input 'frame': one frame per request, got a batch of {pixels.shape[0]}")
        if pixels.shape[1] * pixels.shape[2] > max_pixels:
            raise InputError(f"input 'frame': {pixels.shape[2]}x{pixels.shape[1]} is over the limit of {max_pixels} pixels")
        return array_to_rgb(pixels[0], str(params.get("channel_order", "rgb")))

    def _tensors(self, result: Any, image: np.ndarray) -> List[Any]:
        task = self.predictor.task
        if task == "classification":
            probs = np.zeros(len(self.predictor.labels), dtype=np.float32)
            probs[result.class_ids] = result.scores
            values: Dict[str, Any] = {"scores": probs}
        elif task == "segmentation":
            values = {"label_map": result.label_map}
        else:  # fields a result without detections leaves unset: empty, in the output's shape
            empty = {"masks": np.zeros((0, *image.shape[:2]), bool), "keypoints": np.zeros((0, 0, 3), np.float32),
                     "keypoint_scores": np.zeros((0, 0), np.float32), "rotated": np.zeros((0, 5), np.float32)}
            values = {"boxes": result.boxes, "scores": result.scores, "class_ids": result.class_ids}
            for name in empty:
                value = getattr(result, name)
                values[name] = empty[name] if value is None else value
        return [pb_utils.Tensor(name, np.ascontiguousarray(np.asarray(values[name]).astype(dtype))[None])
                for name, dtype in self.outputs.items()]

    def _engine(self, request: Any) -> Any:
        runner = self.predictor.runner
        try:
            feeds = {}
            for spec in runner.inputs:
                tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
                if tensor is None:
                    raise InputError(f"input '{spec.name}' is missing")
                feeds[spec.name] = tensor.as_numpy()
            outputs = runner.infer(feeds)
        except EdgeVisionError as e:
            return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(e)))
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(name, np.ascontiguousarray(outputs[name]).astype(dtype))
                                                          for name, dtype in self.outputs.items()])

    def finalize(self) -> None:
        self.predictor.close()
