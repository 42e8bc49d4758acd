"""edgevision.load("grpc://host:8001/MODEL") / ("http://host:8000/MODEL"): a Predictor served by Triton.

The same predict(), stream() and result types as a local artifact, so an application (and `edgevision
run`) switches between local and served inference by changing one string:
- a pipeline model (Python backend, images in): images go out encoded (files, as they are on disk) or
  as raw uint8 frames (arrays, PIL images); results come back in original-image pixels;
- an engine model (the graph: native ONNX Runtime / OpenVINO / TensorRT): pre- and post-processing run
  here, with the runtime's own code, and only the graph runs on the server (`TritonRunner`).
Requests that fail to reach the server are retried with exponential back-off; Triton's own refusals are
not (they would fail again) and come back as one line naming the server, the model and the input.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlparse

import numpy as np

from edgevision.errors import BackendNotInstalled, InputError, ServerError
from edgevision.records import ModelInfo
from edgevision.runtime.images import MAX_PIXELS, ImageLike, array_to_rgb, pil_to_rgb
from edgevision.runtime.predictor import Predictor, Result
from edgevision.runtime.results import Classification, Detections, Segmentation
from edgevision.serve import triton_config as tc
from edgevision.tasks import DETECTION_TASKS

SCHEMES = ("grpc", "http", "https")


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    address: str  # host:port
    model: str

    @classmethod
    def parse(cls, url: str) -> "Endpoint":
        parts = urlparse(url)
        model = parts.path.strip("/")
        if parts.scheme not in SCHEMES or not parts.netloc or not model or "/" in model:
            raise InputError(f"{url!r}: a served model is addressed as grpc://HOST:PORT/MODEL or http://HOST:PORT/MODEL")
        default = 8001 if parts.scheme == "grpc" else 8000
        return cls(parts.scheme, parts.netloc if parts.port else f"{parts.hostname}:{default}", model)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.address}/{self.model}"


class Connection:
    """Triton clients for one endpoint (one per thread: tritonclient's HTTP client is not thread-safe),
    with retries for requests that did not reach the server."""

    def __init__(self, endpoint: Endpoint, timeout: float, retries: int, backoff: float) -> None:
        try:
            if endpoint.scheme == "grpc":
                import tritonclient.grpc as client
            else:
                import tritonclient.http as client
        except ImportError:
            raise BackendNotInstalled("triton", "tritonclient", "triton") from None
        self.endpoint, self.module = endpoint, client
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self._local = threading.local()

    def client(self) -> Any:
        c = getattr(self._local, "client", None)
        if c is None:
            if self.endpoint.scheme == "grpc":
                c = self.module.InferenceServerClient(self.endpoint.address)
            else:
                c = self.module.InferenceServerClient(self.endpoint.address, ssl=self.endpoint.scheme == "https",
                                                      connection_timeout=self.timeout, network_timeout=self.timeout)
            self._local.client = c
        return c

    def call(self, what: str, fn: Any) -> Any:
        """fn(client), retried with back-off while the server cannot be reached."""
        from tritonclient.utils import InferenceServerException

        for attempt in range(self.retries + 1):
            try:
                return fn(self.client())
            except InferenceServerException as e:
                if not _unreachable(e) or attempt == self.retries:
                    raise ServerError(_message(self.endpoint, what, e)) from None
            except (OSError, ConnectionError) as e:  # the HTTP client's socket errors
                if attempt == self.retries:
                    raise ServerError(f"{self.endpoint}: cannot reach the server ({e.__class__.__name__}: {e}) after "
                                      f"{self.retries + 1} attempts; is tritonserver running there?") from None
            self._local.client = None
            time.sleep(self.backoff * (2 ** attempt))

    def config(self) -> Any:
        model = self.endpoint.model

        def fetch(c: Any) -> Any:
            if not c.is_model_ready(model):
                raise ServerError(f"{self.endpoint}: model '{model}' is not ready on the server (not in its repository, "
                                  f"or it failed to load: the server log says why); ready models: {_ready(c)}")
            if self.endpoint.scheme == "grpc":
                return c.get_model_config(model, client_timeout=self.timeout).config
            from google.protobuf import json_format

            return json_format.ParseDict(c.get_model_config(model), tc.schema().ModelConfig(), ignore_unknown_fields=True)

        return self.call("reading the model configuration", fetch)

    def infer(self, inputs: Dict[str, np.ndarray], outputs: Sequence[str], parameters: Optional[Dict[str, Any]] = None
              ) -> Dict[str, np.ndarray]:
        def run(c: Any) -> Dict[str, np.ndarray]:
            tensors = []
            for name, value in inputs.items():
                t = self.module.InferInput(name, list(value.shape), _triton_type(value))
                t.set_data_from_numpy(value)
                tensors.append(t)
            wanted = [self.module.InferRequestedOutput(n) for n in outputs]
            kwargs = {"client_timeout": self.timeout} if self.endpoint.scheme == "grpc" else {}
            result = c.infer(self.endpoint.model, tensors, outputs=wanted, parameters=parameters or None, **kwargs)
            return {n: result.as_numpy(n) for n in outputs}

        return self.call("inference", run)

    def close(self) -> None:
        c = getattr(self._local, "client", None)
        if c is not None:
            c.close()
            self._local.client = None


def _unreachable(e: Any) -> bool:
    text = f"{e.status()} {e.message()}".lower()
    return any(w in text for w in ("unavailable", "connection refused", "failed to connect", "connect failed",
                                   "deadline", "timed out", "reset by peer", "broken pipe"))


def _message(endpoint: Endpoint, what: str, e: Any) -> str:
    text = (e.message() or str(e)).strip()
    if _unreachable(e):
        return f"{endpoint}: cannot reach the server during {what} ({text}); is tritonserver running there?"
    return f"{endpoint}: the server refused {what}: {text}"


def _ready(c: Any) -> str:
    try:
        index = c.get_model_repository_index()
        models = index.models if hasattr(index, "models") else index
        names = [m.name if hasattr(m, "name") else m.get("name") for m in models
                 if (m.state if hasattr(m, "state") else m.get("state")) == "READY"]
    except Exception:  # noqa: BLE001 - only a hint in an error message
        return "unknown"
    return ", ".join(sorted(names)) or "none"


def _triton_type(value: np.ndarray) -> str:
    if value.dtype == np.object_:
        return "BYTES"
    from tritonclient.utils import np_to_triton_dtype

    return str(np_to_triton_dtype(value.dtype))


def connect(url: str, *, timeout: float = 30.0, retries: int = 3, backoff: float = 0.2, workers: int = 4
            ) -> Union["RemotePredictor", Predictor]:
    """A Predictor for a model served by Triton (see the module doc)."""
    endpoint = Endpoint.parse(url)
    connection = Connection(endpoint, timeout, retries, backoff)
    config = connection.config()
    info = tc.model_info(config, str(endpoint))
    kind = tc.parameter(config, tc.KIND)
    if kind == "engine":
        return Predictor(info, TritonRunner(connection, config, info))
    if kind != "pipeline":
        raise ServerError(f"{endpoint}: model kind {kind!r} is not one this edgevision knows (pipeline, engine)")
    return RemotePredictor(connection, config, info, workers)


class TritonRunner:
    """The Runner protocol over an engine model: the graph's tensors to the server and back."""

    def __init__(self, connection: Connection, config: Any, info: ModelInfo) -> None:
        from edgevision.backends.base import TensorSpec

        self.connection = connection
        batch = (-1,) if config.max_batch_size > 0 else ()
        self.inputs = [TensorSpec(t.name, batch + tuple(t.dims), tc.NUMPY_TYPES[tc.schema().DataType.Name(t.data_type)])
                       for t in config.input]
        self.outputs = [TensorSpec(t.name, batch + tuple(t.dims), tc.NUMPY_TYPES[tc.schema().DataType.Name(t.data_type)])
                        for t in config.output]

    def infer(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return self.connection.infer(feeds, [s.name for s in self.outputs])

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> "TritonRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Requests:
    """What RemotePredictor.stream's workers call as `runner.infer`: prepared requests out, raw answers back."""

    def __init__(self, predictor: "RemotePredictor") -> None:
        self.predictor = predictor

    def infer(self, feeds: Dict[str, Any]) -> Dict[str, Any]:
        return {"answers": self.predictor.send(feeds["requests"])}

    def close(self) -> None:
        self.predictor.connection.close()


class RemotePredictor:
    """predict() / stream() against a pipeline model: one request per image, sent concurrently."""

    max_proposals = None

    def __init__(self, connection: Connection, config: Any, info: ModelInfo, workers: int) -> None:
        self.connection, self.info = connection, info
        self.task, self.labels, self.input = info.task, list(info.labels), info.input
        self.max_batch = 1  # one image per request; the server batches requests
        self.outputs = [o.name for o in config.output]
        self.runner = _Requests(self)
        self.closed = False
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="edgevision-triton")

    @property
    def name(self) -> str:
        return str(self.connection.endpoint)

    def predict(self, images: Union[ImageLike, Sequence[ImageLike]], *, channel_order: str = "rgb", top_k: int = 5,
                scores: bool = False, proposals: Any = None, max_pixels: int = MAX_PIXELS) -> Union[Result, List[Result]]:
        """As Predictor.predict (runtime/predictor.py); scores=True and proposals are not served."""
        self._check_open()
        if scores or proposals is not None:
            raise InputError(f"{self.name}: {'scores=True' if scores else 'proposals'} is not served by a pipeline model; "
                             "export the artifact's engine model (edgevision export triton --engine) to get it")
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        requests = [_request(im, channel_order, max_pixels) for im in items]
        results = self.decode({"answers": self.send(requests)}, [None] * len(items), top_k=top_k)
        return results[0] if single else results

    def feeds(self, images: Sequence[np.ndarray], proposals: Any = None, bgr: bool = False) -> Tuple[Dict[str, Any], List[None]]:
        """Stream's side: decoded frames (BGR with bgr=True) as requests."""
        order = "bgr" if bgr else "rgb"
        return {"requests": [_request(im, order, MAX_PIXELS) for im in images]}, [None] * len(images)

    def send(self, requests: List[Tuple[Dict[str, np.ndarray], Dict[str, Any]]]) -> List[Dict[str, np.ndarray]]:
        call = (lambda r: self.connection.infer(r[0], self.outputs, r[1]))  # noqa: E731
        if len(requests) == 1:
            return [call(requests[0])]
        return list(self._pool.map(call, requests))

    def decode(self, outputs: Dict[str, Any], transforms: List[Any], top_k: int = 5) -> List[Result]:
        return [self._result(answer, top_k) for answer in outputs["answers"]]

    def _result(self, a: Dict[str, np.ndarray], top_k: int) -> Result:
        if self.task == "classification":
            probs = a["scores"][0]
            ids = np.argsort(-probs, kind="stable")[: min(top_k, probs.shape[0])]
            return Classification(ids.astype(np.int64), probs[ids], [self.labels[i] if i < len(self.labels) else str(i)
                                                                     for i in ids])
        if self.task == "segmentation":
            return Segmentation(a["label_map"][0].astype(np.int32), self.labels)
        if self.task not in DETECTION_TASKS:
            raise ServerError(f"{self.name}: task {self.task!r} is not served")
        extra: Dict[str, Any] = {}
        if "masks" in a:
            extra.update(mask_source=_Masks(a["masks"][0]), image_size=a["masks"][0].shape[1:])
        if "keypoints" in a:
            extra.update(keypoints=a["keypoints"][0], keypoint_scores=a["keypoint_scores"][0])
        if "rotated" in a:
            extra.update(rotated=a["rotated"][0])
        return Detections(a["boxes"][0], a["scores"][0], a["class_ids"][0], self.labels, **extra)

    def stream(self, source: Any, **options: Any) -> Any:
        """As Predictor.stream; each frame is one request, `in_flight` of them at once."""
        from edgevision.runtime.stream import Stream

        self._check_open()
        return Stream(self, list(source) if isinstance(source, (list, tuple)) else [source], **options)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._pool.shutdown(wait=True)
            self.connection.close()

    def _check_open(self) -> None:
        if self.closed:
            raise InputError(f"predictor {self.name} is closed; connect again with edgevision.load()")

    def __enter__(self) -> "RemotePredictor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RemotePredictor({self.name}, task={self.task})"


class _Masks:
    """Masks that came rendered from the server, in the shape Detections reads lazily made ones."""

    def __init__(self, masks: np.ndarray) -> None:
        self.masks = masks.astype(bool)

    def render(self) -> np.ndarray:
        return self.masks

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index: Any) -> "_Masks":
        return _Masks(self.masks[index])


def _request(image: ImageLike, channel_order: str, max_pixels: int) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """One image as a request: a file goes out as its encoded bytes, anything else as a raw uint8 frame."""
    if channel_order not in ("rgb", "bgr"):
        raise InputError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    params: Dict[str, Any] = {"max_pixels": int(max_pixels)}
    if isinstance(image, (str, Path)):
        path = Path(image)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise InputError(f"cannot read {path}: {e.strerror or e}") from None
        return {"image": np.array([[data]], dtype=np.object_)}, params
    if isinstance(image, np.ndarray):
        frame = array_to_rgb(image, "rgb")  # dtype, channels and rank as predict() takes them; the order kept
        params["channel_order"] = channel_order
    elif hasattr(image, "mode") and hasattr(image, "convert"):
        frame = pil_to_rgb(image)
    else:
        raise InputError(f"cannot use an input of type {type(image).__name__}: pass a file path, a PIL image, "
                         "or an HxWx3 uint8 numpy array")
    return {"frame": frame[None]}, params
