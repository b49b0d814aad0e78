"""`evhost build`: turns a Python file that declares one plugin into a WebAssembly component.

The file is imported natively first, to find its plugin (the one `Handler`, `Projection` or
`Policy` at module level) and with it the world to build for. Then a small entry module is
written to a temporary directory (it imports the file and makes the component's exports with
`evhost._guest`), and componentize-py builds the component from it, with the WIT this package
ships and WASI stubbed out: the host refuses components that import files or sockets, and with
stubbed WASI the component imports only `evhost:plugin/*`.

componentize-py runs the entry module once at build time and snapshots the interpreter, so
everything the plugin needs must be imported at module level (a component has no files to import
from later).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from types import ModuleType

from ._plugin import Plugin

ENTRY_MODULE = "evhost_component_entry"
"""The name of the generated entry module: what componentize-py is told to build."""

# Modules a plugin file must not be named after: it is imported under its file's name, both
# here and in the component, next to these.
_RESERVED_MODULES = frozenset(
    {
        "evhost",
        ENTRY_MODULE,
        "wit_world",
        "componentize_py",
        "componentize_py_types",
        "componentize_py_runtime",
        "componentize_py_async_support",
        "poll_loop",
    }
)

_RUN_COMPONENTIZE_PY = "import componentize_py; componentize_py.script()"


class BuildError(Exception):
    """Why a build failed, in words for whoever ran it."""


@dataclasses.dataclass(frozen=True)
class FoundPlugin:
    """The plugin a file declares: the module's name, the attribute holding it, and the
    plugin."""

    module_name: str
    attribute: str
    plugin: Plugin


@dataclasses.dataclass(frozen=True)
class Built:
    """A component that was built."""

    output: Path
    size: int
    plugin: Plugin


def wit_dir() -> Path:
    """The directory holding the WIT package this SDK was written against."""
    return Path(__file__).resolve().parent / "wit"


def find_plugin(source: Path) -> FoundPlugin:
    """Imports `source` natively and returns the one plugin it declares at module level.
    Raises `BuildError` if it cannot be imported or declares none or several."""
    if not source.is_file():
        raise BuildError(f"{source}: no such file")
    if source.suffix != ".py":
        raise BuildError(f"{source}: expected a Python file (.py)")
    module_name = source.stem
    if not module_name.isidentifier():
        raise BuildError(
            f"{source}: {module_name!r} cannot be imported as a module; name the file with "
            "letters, digits and underscores (such as my_plugin.py)"
        )
    if module_name in _RESERVED_MODULES or module_name in sys.stdlib_module_names:
        raise BuildError(
            f"{source}: the module name {module_name!r} is taken (by the standard library or "
            "the build); rename the file"
        )
    module = _import_file(source, module_name)
    found: dict[int, tuple[str, Plugin]] = {}
    for attribute, value in vars(module).items():
        if isinstance(value, Plugin) and id(value) not in found:
            found[id(value)] = (attribute, value)
    if not found:
        raise BuildError(
            f"{source} declares no plugin; expected one Handler, Projection or Policy at module "
            "level (such as `visits = Projection(...)`)"
        )
    if len(found) > 1:
        listed = ", ".join(
            f"{attribute} ({plugin.kind} {plugin.name})" for attribute, plugin in found.values()
        )
        raise BuildError(
            f"{source} declares {len(found)} plugins: {listed}; expected one (put each in a "
            "file of its own)"
        )
    attribute, plugin = next(iter(found.values()))
    return FoundPlugin(module_name, attribute, plugin)


def _import_file(source: Path, module_name: str) -> ModuleType:
    directory = str(source.resolve().parent)
    saved_path = list(sys.path)
    saved_bytecode = sys.dont_write_bytecode
    # Its siblings import as they will in the component; and no bytecode lands in the sources.
    sys.path.insert(0, directory)
    sys.dont_write_bytecode = True
    spec = importlib.util.spec_from_file_location(module_name, source)
    if spec is None or spec.loader is None:
        raise BuildError(f"{source}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(module_name)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        raise BuildError(f"{source}: importing it raised\n{traceback.format_exc()}") from None
    finally:
        sys.path[:] = saved_path
        sys.dont_write_bytecode = saved_bytecode
        if previous is None:
            sys.modules.pop(module_name, None)
        else:
            sys.modules[module_name] = previous
    return module


def entry_module_source(found: FoundPlugin, source: Path) -> str:
    """The entry module componentize-py builds: it imports the plugin's file and makes the
    component's exports for its plugin."""
    plugin = found.plugin
    return (
        f'"""The component entry of {plugin.kind} {plugin.name} ({source.name}), written by '
        '`evhost build`."""\n'
        "\n"
        "import sys\n"
        "\n"
        "# The build imports the plugin once: leave no bytecode in its source directory.\n"
        "sys.dont_write_bytecode = True\n"
        "\n"
        f"import {found.module_name} as plugin_module\n"
        "from evhost._guest import exports_for\n"
        "\n"
        f"WitWorld, Meta = exports_for(plugin_module.{found.attribute})\n"
    )


def build(source: Path, output: Path) -> Built:
    """Builds the component of the plugin in `source` into `output`. Raises `BuildError`."""
    found = find_plugin(source)
    output = output.resolve()
    if output.is_dir():
        raise BuildError(f"{output} is a directory; expected the path of the .wasm to write")
    output.parent.mkdir(parents=True, exist_ok=True)
    sdk_parent = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="evhost-build-") as entry_dir:
        (Path(entry_dir) / f"{ENTRY_MODULE}.py").write_text(entry_module_source(found, source))
        command = [
            sys.executable,
            "-c",
            _RUN_COMPONENTIZE_PY,
            "--wit-path",
            str(wit_dir()),
            "--world",
            found.plugin.kind,
            "componentize",
            "--stub-wasi",
            "--python-path",
            entry_dir,
            "--python-path",
            str(source.resolve().parent),
            "--python-path",
            str(sdk_parent),
            ENTRY_MODULE,
            "--output",
            str(output),
        ]
        try:
            completed = subprocess.run(command, capture_output=True, text=True, check=False)
        except OSError as error:
            raise BuildError(f"cannot run componentize-py: {error}") from None
    if completed.returncode != 0:
        details = (completed.stderr.strip() or completed.stdout.strip()).replace(
            ENTRY_MODULE, f"{ENTRY_MODULE} (the generated entry of {source.name})"
        )
        raise BuildError(f"componentize-py could not build {source}:\n{details}")
    return Built(output=output, size=output.stat().st_size, plugin=found.plugin)
