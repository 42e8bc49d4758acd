"""Reading a recipe file as YAML, bounded: what a careless or hostile file can make the loader do.

PyYAML's safe loader never runs code, but on its own it accepts duplicate keys (the last one
silently wins), aliases that expand exponentially ("billion laughs": 9 levels of 9 aliases are
387 million values), nesting deep enough to exhaust Python's stack, and integers of any length.
Each of these is refused here with a one-line RecipeError naming the file and, where known, the
line.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from edgevision.errors import RecipeError

MAX_BYTES = 1 << 20  # a recipe is a page of YAML; 1 MiB is far beyond any real one
MAX_DEPTH = 32  # nesting of mappings / lists
MAX_VALUES = 20_000  # scalars, lists and mappings after expanding aliases
MAX_CHARS = 1 << 20  # characters in all scalars after expanding aliases


def read_recipe_text(path: Path) -> str:
    """The text of a recipe file, or a RecipeError that says what the path is instead."""
    try:
        info = os.stat(path)  # stat, not open: opening a FIFO would block
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe file not found") from None
    except (OSError, ValueError) as e:
        raise RecipeError(f"{path}: cannot read the recipe file ({e})") from None
    if stat.S_ISDIR(info.st_mode):
        raise RecipeError(f"{path}: is a directory; give the recipe's .yaml file, e.g. {Path(path) / 'recipe.yaml'}")
    if not stat.S_ISREG(info.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(
            info.st_mode) else "a socket" if stat.S_ISSOCK(info.st_mode) else "not a regular file"
        raise RecipeError(f"{path}: is {kind}, not a recipe file; give a .yaml file")
    if info.st_size > MAX_BYTES:
        raise RecipeError(f"{path}: {info.st_size} bytes is too large for a recipe (at most {MAX_BYTES})")
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise RecipeError(f"{path}: cannot read the recipe file ({e.strerror})") from None


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (merge keys `<<` may still be overridden)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:  # type: ignore[override]
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base constructor says so
                continue
            if first is not None:
                raise RecipeError(f"line {line}: duplicate key {_short(repr(key))} (first given on line {first}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str) -> Any:
    """YAML text -> Python data, within the bounds above."""
    try:
        _check_depth(text)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_expansion(node)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except RecipeError as e:
        raise RecipeError(f"{source}: {e}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise RecipeError(f"{source}: {where}invalid YAML: {_short(str(e.problem or e), 200)}") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"{source}: invalid YAML: {_short(str(e), 200)}") from None
    except (ValueError, OverflowError) as e:  # e.g. int('1' * 5000): Python's digit limit
        what = "a number has too many digits" if "digits" in str(e) else _short(str(e), 200)
        raise RecipeError(f"{source}: a value cannot be read: {what}") from None
    except RecursionError:
        raise RecipeError(f"{source}: nested too deeply to read (at most {MAX_DEPTH} levels)") from None


def _check_depth(text: str) -> None:
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise RecipeError(f"line {event.start_mark.line + 1}: nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _check_expansion(root: yaml.Node) -> None:
    """Count what the document becomes once every alias is expanded, without expanding it."""
    memo: dict[int, tuple[int, int]] = {}

    def size(node: yaml.Node, depth: int) -> tuple[int, int]:
        if depth > MAX_DEPTH:  # only reachable through aliases (plain nesting was checked)
            raise RecipeError(f"line {node.start_mark.line + 1}: aliases nest deeper than {MAX_DEPTH} levels")
        if id(node) in memo:
            return memo[id(node)]
        if isinstance(node, yaml.ScalarNode):
            out = (1, len(node.value))
        else:
            children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else node.value
            out = (1, 0)
            for child in children:
                n, chars = size(child, depth + 1)
                out = (out[0] + n, out[1] + chars)
                if out[0] > MAX_VALUES or out[1] > MAX_CHARS:
                    raise RecipeError(f"line {node.start_mark.line + 1}: the recipe expands (through YAML aliases) to more "
                                      f"than {MAX_VALUES} values or {MAX_CHARS} characters; write the values out instead")
        memo[id(node)] = out
        return out

    size(root, 0)


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
