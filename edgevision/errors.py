"""Errors that reach the user. The CLI prints them as one line, without a traceback."""

from __future__ import annotations


class EdgeVisionError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class RecipeError(EdgeVisionError):
    """A recipe file is missing, malformed or invalid (message names file and field path)."""


class ModelSourceError(EdgeVisionError):
    """A model builder, factory or checkpoint cannot be resolved or loaded."""


class ExportError(EdgeVisionError):
    """The model could not be exported to ONNX (message names the op when known)."""


class BackendError(EdgeVisionError):
    """A backend is not installed, or cannot build or run a graph."""


class BackendNotInstalled(BackendError):
    def __init__(self, backend: str, package: str, extra: str) -> None:
        super().__init__(
            f"backend '{backend}' needs the Python package '{package}', which is not installed; "
            f"install it with: pip install 'edgevision[{extra}]'"
        )
        self.backend = backend
        self.package = package


class ArtifactError(EdgeVisionError):
    """An artifact directory is missing, incomplete or modified."""


class InputError(EdgeVisionError):
    """An image or array given to predict() cannot be used."""


class DataError(EdgeVisionError):
    """A dataset source (folder, COCO json, shapes) cannot be read."""


class VerificationFailed(EdgeVisionError):
    """One or more variants are over their parity or accuracy tolerance; carries the manifest."""

    def __init__(self, message: str, manifest: dict) -> None:
        super().__init__(message)
        self.manifest = manifest


class SourceError(EdgeVisionError):
    """A video source (file, folder, camera, URL, GStreamer pipeline) cannot be opened or stopped delivering."""


class ServerError(EdgeVisionError):
    """A served model (Triton) cannot be reached, is not ready, or refused a request (message names server and model)."""


class OutputError(EdgeVisionError):
    """An output file (`run --save/--jsonl`, `predict --save`) may not go where asked, or was not written whole."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (timeout, docker stop, systemd), handled as Ctrl-C: outputs finalised, exit 143."""
