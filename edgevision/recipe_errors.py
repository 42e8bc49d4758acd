"""Recipe validation errors as one line each, naming the field and what to do ("did you mean").

Every value quoted in a message is cut to MAX_VALUE characters and a message lists at most
MAX_LINES errors, so a huge or hostile recipe still gets a short answer."""

from __future__ import annotations

import difflib
import reprlib
from typing import Any

from pydantic import BaseModel

MAX_VALUE = 120  # characters of a value quoted in an error
MAX_LINES = 20  # errors listed per recipe


def format_errors(root: Any, errors: list[dict[str, Any]], source: str) -> str:
    """All validation errors of a recipe, one line each, bounded in number and length."""
    lines = [f"{source}: {format_error(root, err)}" for err in errors[:MAX_LINES]]
    if len(errors) > MAX_LINES:
        lines.append(f"{source}: ... and {len(errors) - MAX_LINES} more errors")
    return "\n".join(lines)


_REPR = reprlib.Repr()  # keyword arguments only from Python 3.12
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple, _REPR.maxset = 3, 6, 6, 6, 6
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = MAX_VALUE, MAX_VALUE, 40


def shown(value: Any) -> str:
    """repr(value), with long strings, numbers and collections abridged (reprlib)."""
    try:
        text = _REPR.repr(value)
    except (ValueError, RecursionError):  # e.g. an int past Python's digit limit
        text = f"<{type(value).__name__}>"
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 4] + "...'"


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def format_error(root: Any, err: dict[str, Any]) -> str:
    """One pydantic error of a `root` model as 'field.path: what is wrong (and the fix)'."""
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    where = _format_loc(loc)[: MAX_VALUE * 2]
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        key = str(loc[-1])[:MAX_VALUE]
        known = _fields_at(root, loc[:-1])
        hint = difflib.get_close_matches(key, known, n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else f" (known keys: {', '.join(known)})"
        return f"{where}: unknown key '{key}'{suggestion}"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        choices = [c.strip().strip("'") for c in expected.replace(" or ", ", ").split(",") if c.strip()]
        return f"{where}: {shown(value)} is not one of {', '.join(choices)}"
    if kind == "missing":
        return f"{where}: required field is missing"
    msg = err["msg"].removeprefix("Value error, ")
    prefix = f"{where}: " if where else ""
    if kind.endswith(("_type", "_parsing")):
        return f"{prefix}{msg[:MAX_VALUE * 2]} (got {shown(value)})"
    return f"{prefix}{msg[:MAX_VALUE * 2]}"


def _fields_at(root: Any, loc: tuple[Any, ...]) -> list[str]:
    """Field names of the schema object at a location (for 'did you mean')."""
    model: Any = root
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        model = _model_of(field.annotation) if field else None
    return sorted(model.model_fields) if model is not None else []


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None
