"""Reading a spec: the TOML file, `--set key=value` overrides, then validation.

Every way the input can be wrong (no file, unreadable, not UTF-8, bad TOML, unknown
key, bad value) ends as one `UserError` line naming the file or the --set argument.
"""

from __future__ import annotations

import copy
import difflib
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from workbench.errors import UserError

from .keys import check_keys, set_dotted
from .messages import DICT_SOURCE
from .schema import FIELDS_BY_KEY
from .sections import Spec
from .validate import build_spec

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> Spec:
    """Read, override and validate a spec file; mistakes name the file or the --set."""
    path = Path(path)
    document = _read_toml(path)
    check_keys(document, str(path))  # before overrides, so unknown keys name the file
    origins = {_parse_override(text)[0]: f"--set {text}" for text in _as_list(overrides)}
    return build_spec(apply_overrides(document, overrides), str(path), origins)


def spec_from_dict(d: Mapping[str, Any], source: str = DICT_SOURCE) -> Spec:
    """Validate a nested (or dotted-key) mapping; missing sections and keys take defaults."""
    return build_spec(d, source)


def apply_overrides(d: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of `d` with each "section.key=VALUE" set; VALUE is read as TOML, else as a
    bare string (so `model.activation=tanh` works as well as `model.hidden=[256,256]`)."""
    updated = copy.deepcopy(dict(d))
    for text in _as_list(overrides):
        key, value = _parse_override(text)
        set_dotted(updated, key, value, f"--set {text}")
    return updated


def _parse_override(text: Any) -> tuple[str, Any]:
    if not isinstance(text, str) or "=" not in text or not text.partition("=")[0].strip():
        raise UserError(f"malformed override {text!r}: expected KEY=VALUE, e.g. --set optimizer.lr=0.01")
    key, _, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    value = _parse_value(raw)
    field = FIELDS_BY_KEY.get(key)
    if field is not None and field.kind is str and not isinstance(value, str):
        value = raw  # name=2024 or data.target=0 mean the text
    return key, value


def _parse_value(raw: str) -> Any:
    """The TOML value of `raw`, or `raw` itself when it is not one TOML value."""
    try:
        parsed = tomllib.loads("v = " + raw)
    except (ValueError, RecursionError):  # TOMLDecodeError is a ValueError; so is a 5000-digit int
        return raw
    return parsed["v"] if list(parsed) == ["v"] else raw


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"spec file not found: {path}{_did_you_mean(path)}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a directory: expected a spec file such as experiments/digits_mlp.toml") from None
    except PermissionError:
        raise UserError(f"cannot read spec file {path}: permission denied") from None
    except (OSError, ValueError) as error:  # NotADirectoryError, embedded NUL, ...
        reason = getattr(error, "strerror", None) or str(error)
        raise UserError(f"cannot read spec file {path}: {reason}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not UTF-8 text (bad byte at offset {error.start}): save it as UTF-8") from None
    try:
        document = tomllib.loads(text)
    except (ValueError, RecursionError) as error:
        raise UserError(_toml_error(path, text, error)) from None
    if not document:  # an empty (or comments-only) file is a mistake, not "all defaults"
        raise UserError(
            f"{path}: the spec is empty (no keys): write at least name = \"my-experiment\" "
            "or start from a copy of experiments/digits_mlp.toml"
        )
    return document


def _toml_error(path: Path, text: str, error: BaseException) -> str:
    """'x.toml:3:7: invalid TOML: Invalid value (near `lr = ,`)' from tomllib's message."""
    message = str(error) if isinstance(error, ValueError) else "nesting too deep"
    found = _TOML_POSITION.search(message)
    if not found:
        return f"{path}: invalid TOML: {message}"
    line, column = int(found.group(1)), int(found.group(2))
    lines = text.splitlines()
    near = lines[line - 1].strip()[:60] if 0 < line <= len(lines) else ""
    context = f" (near `{near}`)" if near else ""
    return f"{path}:{line}:{column}: invalid TOML: {message[: found.start()]}{context}"


def _did_you_mean(path: Path) -> str:
    """': did you mean experiments/digits.toml?' when a sibling file is close."""
    try:
        siblings = [p.name for p in path.parent.iterdir() if p.suffix == ".toml"]
    except OSError:
        return ""
    match = difflib.get_close_matches(path.name, siblings, n=1)
    return f": did you mean {path.parent / match[0]}?" if match else ""


def _as_list(overrides: Sequence[str]) -> list[str]:
    """One string is one override, not a sequence of characters."""
    return [overrides] if isinstance(overrides, str) else list(overrides)
