"""The package version, at the bottom (imports nothing): what manifests and reports record."""

__version__ = "0.1.0"
