"""A small TOML writer for the spec's shape: top-level scalars, then one table per section.

The standard library reads TOML but does not write it. Values are str, int, float,
bool or lists of those; floats are written with `repr`, which round-trips exactly.
`format_value` also renders values in error messages, so users see TOML syntax.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def format_value(value: object) -> str:
    """A value as TOML source (`true`, `0.001`, `"relu"`, `[128, 64]`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(str(k))} = {format_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def dumps(document: Mapping[str, object]) -> str:
    """Top-level scalars first, then each nested mapping as a `[table]`; None is skipped."""
    scalars = {key: v for key, v in document.items() if v is not None and not isinstance(v, Mapping)}
    lines = [f"{key} = {format_value(v)}" for key, v in scalars.items()]
    for key, table in document.items():
        if isinstance(table, Mapping):
            lines += ["", f"[{key}]"]
            lines += [f"{name} = {format_value(v)}" for name, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


def _key(text: str) -> str:
    """A bare key where TOML allows one (`type`), else a quoted one."""
    bare = text and all(ch.isascii() and (ch.isalnum() or ch in "_-") for ch in text)
    return text if bare else _quote(text)


def _quote(text: str) -> str:
    """A TOML basic string: escapes quotes, backslashes and control characters."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F or 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")  # surrogates only reach error messages: validation rejects them
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
