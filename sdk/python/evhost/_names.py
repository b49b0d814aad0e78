"""The host's rules for names: plugin names, categories and event or command types.

The host checks these at deploy time (and when it appends events); the SDK checks them when a
plugin is declared, so a mistake shows up in a unit test or at build time with the line that
made it, not as a refused upload.
"""

from __future__ import annotations

import re

_PLUGIN_NAME = re.compile(r"[a-z][a-z0-9-]{0,63}")
_TYPE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_MAX_CATEGORY_BYTES = 128


def check_plugin_name(name: str) -> str:
    """Returns `name` if it is a valid plugin name, else raises `ValueError` saying why."""
    if not isinstance(name, str) or not _PLUGIN_NAME.fullmatch(name):
        raise ValueError(
            f"plugin name {name!r} is not 1 to 64 characters from [a-z0-9-] starting with a letter"
        )
    return name


def check_category(category: str) -> str:
    """Returns `category` if it is a valid category, else raises `ValueError` saying why.

    A category is what a stream's name holds before its first `-` (`visit` in `visit-42`), so it
    cannot contain `-` itself.
    """
    if (
        not isinstance(category, str)
        or not category
        or len(category.encode()) > _MAX_CATEGORY_BYTES
        or "-" in category
        or any(_is_control(char) for char in category)
    ):
        raise ValueError(
            f"category {category!r} is not 1 to {_MAX_CATEGORY_BYTES} bytes without '-' or "
            "control characters"
        )
    return category


def check_type_name(name: str) -> str:
    """Returns `name` if it is a valid event or command type, else raises `ValueError`."""
    if not isinstance(name, str) or not _TYPE_NAME.fullmatch(name):
        raise ValueError(f"type name {name!r} is not 1 to 128 characters from [A-Za-z0-9_.:-]")
    return name


def _is_control(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F
