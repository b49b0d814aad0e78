"""Shared helpers: where the repository is, importing a plugin file by its path (as
`evhost build` does) without leaving bytecode beside it, and the library's events, which the
handler tests decide and the policy tests react to."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from evhost import event

REPO = Path(__file__).resolve().parents[3]
"""The root of the evhost checkout these tests live in."""


def load_module(path: Path, name: str | None = None) -> ModuleType:
    """Imports the Python file at `path` as a fresh module."""
    name = name or f"plugin_under_test_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = saved
    return module


@event
class Lent:
    member: str


@event
class Returned:
    pass
