"""Log lines in the host's log, tagged there with the plugin's name and version.

In a component these call the host's `log.write`; natively (unit tests) they go to Python's
`logging`, under the logger `evhost.plugin`, so pytest shows them with a failing test.
`print()` in a component reaches the host's log too (standard output at info, standard error at
warn), one line per line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

Level = Literal["trace", "debug", "info", "warn", "error"]
"""How severe a line is, from step-by-step detail (`trace`) to something that failed (`error`)."""

_LOGGING_LEVELS: dict[str, int] = {
    "trace": logging.DEBUG - 5,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}

_logger = logging.getLogger("evhost.plugin")


def _write_to_logging(level: Level, message: str) -> None:
    _logger.log(_LOGGING_LEVELS[level], "%s", message)


# Where lines go: Python's logging natively; the component's glue points it at the host.
_sink: Callable[[Level, str], None] = _write_to_logging


def write(level: Level, message: str) -> None:
    """Writes one line at `level` (`trace`, `debug`, `info`, `warn` or `error`)."""
    _sink(level, str(message))


def trace(message: str) -> None:
    """Writes a step-by-step detail."""
    _sink("trace", str(message))


def debug(message: str) -> None:
    """Writes a detail for diagnosing."""
    _sink("debug", str(message))


def info(message: str) -> None:
    """Writes a normal event worth a line."""
    _sink("info", str(message))


def warn(message: str) -> None:
    """Writes something unexpected that the plugin handled."""
    _sink("warn", str(message))


warning = warn
"""The same as `warn`, by the name Python's `logging` uses."""


def error(message: str) -> None:
    """Writes something that failed."""
    _sink("error", str(message))


def set_sink(sink: Callable[[Level, str], None]) -> None:
    """Sends every line to `sink` from now on: the component's glue points it at the host."""
    global _sink
    _sink = sink
