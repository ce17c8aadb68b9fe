"""Spec keys: catching unknown ones (with a suggestion) and setting dotted ones.

Typos are the commonest spec mistake, so every unknown key gets the nearest known
key: a declared alias, a close spelling in the same section, the same name in another
section, or a close spelling anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workbench.errors import UserError

from .messages import DICT_SOURCE, close_match, located, show
from .schema import FIELDS, FIELDS_BY_KEY, KEY_ALIASES, SECTIONS, known_keys

TOP_LEVEL = tuple(f.key for f in FIELDS if not f.section)


def section_names(section: str) -> list[str]:
    """The keys of one section, without the section prefix."""
    return [f.name for f in FIELDS if f.section == section]


def suggest_key(key: str) -> str | None:
    """The known key the user most likely meant, or None."""
    section, _, name = key.rpartition(".")
    alias = KEY_ALIASES.get(key) or KEY_ALIASES.get(name)
    if alias:
        return alias
    if not section:
        return close_match(name, TOP_LEVEL + SECTIONS) or _same_name_elsewhere(name)
    if section not in SECTIONS:
        section = close_match(section, SECTIONS) or KEY_ALIASES.get(section, "")
    if section in SECTIONS:
        names = section_names(section)
        match = name if name in names else close_match(name, names)
        if match:
            return f"{section}.{match}"
    return _same_name_elsewhere(name) or close_match(key, known_keys())


def unknown_key(key: str, where: str) -> UserError:
    """The error for a key the schema does not declare."""
    section = key.rpartition(".")[0]
    if section in SECTIONS:
        allowed = f"allowed in [{section}]: " + ", ".join(section_names(section))
    else:
        allowed = "allowed at top level: " + ", ".join(TOP_LEVEL) + " and the tables " + ", ".join(SECTIONS)
    place = "" if where == DICT_SOURCE else f" in {where}"
    suggestion = suggest_key(key)
    hint = f": did you mean '{suggestion}'?" if suggestion and suggestion != key else ""
    return UserError(f"unknown key '{key}'{place}{hint} ({allowed})")


def check_keys(document: Mapping[Any, Any], where: str) -> None:
    """Raise on the first unknown key or on a section that is not a table."""
    for key, value in document.items():
        key = key if isinstance(key, str) else repr(key)
        if key in SECTIONS:
            if not isinstance(value, Mapping):
                keys = ", ".join(section_names(key))
                raise UserError(located(f"{key} = {show(value)} should be a table: [{key}] with keys {keys}", where))
            for name in value:
                full = f"{key}.{name}" if isinstance(name, str) else f"{key}.{name!r}"
                if full not in FIELDS_BY_KEY:
                    raise unknown_key(full, where)
        elif key not in TOP_LEVEL:
            raise unknown_key(key, where)


def set_dotted(document: dict[str, Any], key: str, value: Any, where: str) -> None:
    """Set a known dotted key in a nested dict, in place, creating its table if needed."""
    if not isinstance(key, str) or key not in FIELDS_BY_KEY:
        raise unknown_key(key if isinstance(key, str) else repr(key), where)
    section, _, name = key.rpartition(".")
    if not section:
        document[name] = value
        return
    table = document.get(section, {})
    if not isinstance(table, Mapping):
        raise UserError(located(f"cannot set {key}: {section} = {show(table)} is not a table", where))
    document[section] = {**table, name: value}


def nest(document: Mapping[Any, Any], where: str) -> dict[Any, Any]:
    """Accept flat dotted keys ({"optimizer.lr": 0.1}) next to nested tables."""
    out: dict[Any, Any] = {k: v for k, v in document.items() if not (isinstance(k, str) and "." in k)}
    for key, value in document.items():
        if isinstance(key, str) and "." in key:
            section, _, name = key.rpartition(".")
            table = out.get(section)
            if isinstance(table, Mapping) and name in table:
                raise UserError(located(f"{key} is given twice (as a dotted key and inside [{section}])", where))
            set_dotted(out, key, value, where)
    return out


def _same_name_elsewhere(name: str) -> str | None:
    """'lr' at the top level or in [training] most likely means 'optimizer.lr'."""
    return next((f.key for f in FIELDS if f.name == name), None)
