"""The recipe's value types: strict models, checked strings and paths, bounded counts and seeds
(recipe.py builds its sections from them)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


class _Strict(BaseModel):
    """Strict types: a bool is true or false, never "false" or 0 (a quoted "false" is a non-empty string, and a
    lax bool would take it as consent); an int is never "8" or 8.0; a float may be an int. NaN / inf: "finite
    number" errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


def _text(value: Any) -> Any:
    """Strings that name things (paths, labels, sources): not blank, no NUL byte, bounded."""
    if isinstance(value, (str, Path)):
        text = str(value)
        if not text.strip():
            raise ValueError("is blank; give a value")
        if "\x00" in text:
            raise ValueError("contains a NUL byte")
        if len(text) > 4096:
            raise ValueError(f"is {len(text)} characters long (at most 4096)")
    return value


def _path(value: Any) -> Any:
    value = _text(value)
    return Path(value) if isinstance(value, str) else value


def _tuple(value: Any) -> Any:
    """YAML and JSON give lists; a fixed-length field is a tuple."""
    return tuple(value) if isinstance(value, list) else value


SafePath = Annotated[Path, BeforeValidator(_path)]
Text = Annotated[str, BeforeValidator(_text)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1, description="Random seed (0 .. 2^32-1).")]
Count = Annotated[int, Field(ge=1, le=1_000_000)]

Precision = Literal["fp32", "fp16", "bf16", "int8"]
