"""Shared pieces of user-facing error lines: values shown as TOML, where, close matches."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from .toml_writer import format_value

DICT_SOURCE = "<dict>"  # spec built from a Python mapping: no file to name
_MAX_SHOWN = 60


def show(value: object) -> str:
    """A value as the user would write it in TOML, shortened to fit one line."""
    text = "None" if value is None else format_value(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def located(message: str, where: str) -> str:
    """Prefix the file (or the --set argument) the mistake came from, compiler style."""
    return message if not where or where == DICT_SOURCE else f"{where}: {message}"


def close_match(word: str, candidates: Iterable[str]) -> str | None:
    """The nearest candidate by difflib, ignoring case; None when nothing is close."""
    candidates = list(candidates)
    lowered = {c.lower(): c for c in candidates}
    found = difflib.get_close_matches(word.lower(), list(lowered), n=1)
    return lowered[found[0]] if found else None
