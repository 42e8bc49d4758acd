"""load(path) -> Predictor: the same predict() on every backend, without PyTorch.

Runs on Python 3.10 (JetPack 6) with numpy and one backend package.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgevision.artifact import VARIANT, inside, read_manifest, read_variant, verify_files
from edgevision.backends.base import Runner, create_runner
from edgevision.errors import ArtifactError, BackendNotInstalled, InputError
from edgevision.runtime import postprocess
from edgevision.runtime.images import MAX_PIXELS, ImageLike, to_rgb
from edgevision.records import ModelInfo, VariantRecord
from edgevision.runtime.preprocess import Transform, preprocess
from edgevision.runtime.proposals import PROPOSALS, proposal_batch
from edgevision.runtime.results import Classification, Detections, Segmentation
from edgevision.runtime.sources import SourceLike
from edgevision.tasks import DETECTION_TASKS, TASKS

if TYPE_CHECKING:
    from edgevision.runtime.stream import Stream

Result = Union[Classification, Segmentation, Detections]


class Predictor:
    """Pre-process in OpenCV, run one backend, post-process in OpenCV and numpy.

    Thread-safe: predict() may be called from several threads at once on every backend (the
    runners say how: ORT sessions are re-entrant, OpenVINO gives each concurrent call its own infer
    request, TensorRT serialises calls); results never alias buffers that a later call overwrites.
    """

    def __init__(self, info: ModelInfo, runner: Runner, variant: Optional[VariantRecord] = None,
                 path: Optional[Path] = None) -> None:
        self.info = info
        self.variant = variant
        self.path = path
        self.runner = runner
        self.task: str = info.task
        self.labels: List[str] = list(info.labels)
        self.input = info.input
        self.input_name: str = info.input_name
        self.max_batch: int = info.max_batch
        self.max_proposals: Optional[int] = info.proposals  # external-proposal artifacts
        self.closed = False
        if self.task not in TASKS:
            raise ArtifactError(f"task '{self.task}' is not supported by this runtime version")

    @property
    def name(self) -> str:
        return self.variant.name if self.variant is not None else "model"

    def predict(
        self,
        images: Union[ImageLike, Sequence[ImageLike]],
        *,
        channel_order: str = "rgb",
        top_k: int = 5,
        scores: bool = False,
        proposals: Any = None,
        max_pixels: int = MAX_PIXELS,
    ) -> Union[Result, List[Result]]:
        """Run the model on one image or a list of them.

        images: a file path, a PIL image, an HxWx3 uint8 array (RGB, or BGR with
        channel_order='bgr' as OpenCV gives), or a list of these. Grayscale, RGBA and 16-bit
        inputs are converted. Returns one result, or a list for a list.
        proposals (external-proposal artifacts): boxes [N,4] xyxy in original image pixels, one
        array per image for a list; out-of-image coordinates are clipped, an empty array gives
        no detections; None: a fixed multi-scale grid of boxes.
        max_pixels: image files declaring more pixels are refused before they are decoded (images.py).
        """
        self._check_open()
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        if not items:
            return []
        per_image = None if proposals is None else ([proposals] if single else list(proposals))
        if per_image is not None and len(per_image) != len(items):
            raise InputError(f"proposals: one array per image expected, got {len(per_image)} for {len(items)} images")
        if per_image is not None and self.max_proposals is None:
            raise InputError(f"proposals: {self.name} does not take proposals (it was not compiled with export.proposals)")
        # BGR arrays (OpenCV frames) stay BGR: the pre-processing reads their planes in that order, so
        # the channel flip costs no copy (a 640x480 flip is about 1 ms, a fifth of a small detector)
        bgr = channel_order == "bgr" and all(isinstance(im, np.ndarray) for im in items)
        pixels = [to_rgb(im, "rgb" if bgr else channel_order, max_pixels) for im in items]  # "rgb": as given, no flip
        results: List[Result] = []
        for start in range(0, len(pixels), self.max_batch):
            part = None if per_image is None else per_image[start : start + self.max_batch]
            feeds, transforms = self.feeds(pixels[start : start + self.max_batch], part, bgr=bgr)
            outputs = self.runner.infer(feeds)
            results.extend(self.decode(outputs, transforms, top_k=top_k, scores=scores))
        return results[0] if single else results

    def feeds(self, rgb: Sequence[np.ndarray], proposals: Optional[Sequence[Any]] = None, bgr: bool = False
              ) -> Tuple[Dict[str, np.ndarray], List[Transform]]:
        """The graph inputs for HxWx3 uint8 images, RGB (BGR with bgr=True), pre-processed (and
        proposals for external-proposal artifacts), and each image's transform back to original pixels."""
        batch, transforms = preprocess(rgb, self.input, bgr)
        feeds = {self.input_name: batch}
        if self.max_proposals is not None:
            feeds[PROPOSALS] = proposal_batch(proposals, transforms, self.max_proposals, self.input.size)
        return feeds, transforms

    def decode(self, outputs: Dict[str, np.ndarray], transforms: List[Transform], top_k: int = 5,
               scores: bool = False) -> List[Result]:
        """The graph outputs of a batch -> one result per image, in original image pixels."""
        if self.task == "classification":
            return [postprocess.classification(outputs, i, self.labels, top_k) for i in range(len(transforms))]
        if self.task in DETECTION_TASKS:
            return [postprocess.detection(outputs, i, t, self.labels, self.input.size) for i, t in enumerate(transforms)]
        return [postprocess.segmentation(outputs, i, t, self.input.size, self.labels, scores) for i, t in enumerate(transforms)]

    def stream(self, source: Union[SourceLike, Sequence[SourceLike]], **options: Any) -> "Stream":
        """Run the model on a video file, image folder, camera index, URL or GStreamer pipeline (or a
        list of them), pipelined, results in frame order:

            for frame in model.stream("clip.mp4"):    # frame.index, .timestamp, .image (BGR), .result
            model.stream(0, on_result=callback)        # pushed from a background thread; .wait(), .stop()

        options (runtime/stream.py's Stream): drop ('oldest' | 'newest' | 'none', live sources only;
        files never drop), buffer (frames per source), in_flight (frames in the engine at once),
        track, min_score, classes, top_k, reconnect (attempts in a row, and at most that many reconnects
        within reconnect_window seconds, default 60), backoff and timeout (seconds),
        fps (for image folders), max_frames (per source), draw (frame.overlay: the result drawn),
        on_result, on_event (status messages).
        """
        from edgevision.runtime.stream import Stream

        self._check_open()
        sources = list(source) if isinstance(source, (list, tuple)) else [source]
        return Stream(self, sources, **options)

    def close(self) -> None:
        """Release the engine; predict() and stream() then raise "predictor is closed" (every backend)."""
        if not self.closed:
            self.closed = True
            self.runner.close()

    def _check_open(self) -> None:
        if self.closed:
            raise InputError(f"predictor {self.name} is closed; open the artifact again with edgevision.load()")

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        backend, precision = (self.variant.backend, self.variant.precision) if self.variant else (None, None)
        return f"Predictor({self.name}, task={self.task}, backend={backend}, precision={precision})"


def load(
    path: Union[str, Path],
    variant: Optional[str] = None,
    *,
    threads: Optional[int] = None,
    streams: int = 1,
    verify: bool = True,
) -> Predictor:
    """Open a built variant: a variant folder (e.g. build/quickstart/openvino-fp32), or an artifact
    folder with `variant=` naming one (default: the first verified variant whose backend is installed).

    threads: CPU threads in all (default: every core).
    streams: calls expected at once. 1 (default) gives each predict() every thread, for the lowest
    latency; for stream(in_flight=N) or N threads calling predict(), load with streams=N so the
    engine splits its threads (OpenVINO: N CPU streams) instead of N calls fighting over them.
    verify: check the sha256 of every model file against variant.json first.
    """
    path = Path(path)
    if path.is_symlink() and (path.parent / "manifest.json").is_file():
        raise ArtifactError(f"{path}: is a symbolic link (to {os.readlink(path)}) inside an artifact; an artifact holds "
                            "its own variant folders: load the folder itself, or rebuild the artifact")
    if (path / VARIANT).is_file():
        if variant is not None and variant != path.name:
            raise ArtifactError(f"{path} is the variant '{path.name}'; do not also ask for variant '{variant}'")
        return _open_variant(path, threads, streams, verify)
    variants = read_manifest(path).variants
    names = [v.name for v in variants]
    if variant is not None:
        if variant not in names:
            raise ArtifactError(f"{path}: no variant '{variant}' (variants: {', '.join(names)})")
        return _open_variant(inside(path, variant, "variant"), threads, streams, verify)
    errors = []
    for v in variants:
        if v.status != "passed":
            continue
        try:
            return _open_variant(inside(path, v.name, "variant"), threads, streams, verify)
        except BackendNotInstalled as e:
            errors.append(str(e))
    detail = ("; ".join(errors)) if errors else "no variant passed verification"
    raise ArtifactError(f"{path}: no variant can be loaded here ({detail})")


def _open_variant(vdir: Path, threads: Optional[int], streams: int, verify: bool) -> Predictor:
    found = read_variant(vdir)
    variant = found.variant
    settings = variant.settings or {}
    if verify:
        verify_files(vdir, variant.files or {})
    files = {role: vdir / rel for role, rel in settings["files"].items()}
    if streams < 1:
        raise InputError(f"streams must be >= 1, got {streams}")
    runner = create_runner(variant.backend, files, settings, threads=threads, streams=streams)
    return Predictor(found.info, runner, variant, path=vdir)
