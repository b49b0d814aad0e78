"""The command line of the Python SDK: `python -m evhost build FILE -o OUT` (also installed as
`evhost-py`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._build import BuildError, build


def main(argv: list[str] | None = None) -> int:
    """Runs the command line with `argv` (the process's arguments by default); returns the exit
    status."""
    parser = argparse.ArgumentParser(
        prog="evhost-py",
        description="Build evhost plugins written in Python into WebAssembly components.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    build_command = commands.add_parser(
        "build",
        help="build a plugin file into a component",
        description=(
            "Build the one Handler, Projection or Policy that FILE declares at module level "
            "into a component that `evhost deploy` uploads."
        ),
    )
    build_command.add_argument("file", type=Path, metavar="FILE", help="the plugin's .py file")
    build_command.add_argument(
        "-o", "--output", type=Path, required=True, metavar="OUT", help="the .wasm file to write"
    )
    arguments = parser.parse_args(argv)

    try:
        built = build(arguments.file, arguments.output)
    except BuildError as error:
        print(f"evhost build: {error}", file=sys.stderr)
        return 1
    print(f"built {arguments.output} ({built.size} bytes): {built.plugin.kind} {built.plugin.name}")
    return 0
