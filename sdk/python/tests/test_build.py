"""`evhost build`: finding the one plugin a file declares, the entry module it writes, and the
command line's answers. Building a component is the one slow test (marker `build`)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from evhost._build import BuildError, entry_module_source, find_plugin

PROJECTION = """
from evhost import Projection
counts = Projection("counts", "Counts events")
counts.on_any(lambda state, event: state.put("n", state.get("n", 0) + 1))
"""


def write(directory: Path, name: str, source: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(source))
    return path


def test_the_one_plugin_is_found_with_its_attribute(tmp_path: Path) -> None:
    found = find_plugin(write(tmp_path, "counting.py", PROJECTION))
    assert (found.module_name, found.attribute, found.plugin.name) == (
        "counting",
        "counts",
        "counts",
    )
    assert "counting" not in sys.modules, "the import leaves no trace"
    assert not (tmp_path / "__pycache__").exists(), "nor bytecode beside the source"
    entry = entry_module_source(found, tmp_path / "counting.py")
    assert "import counting as plugin_module" in entry
    assert "WitWorld, Meta = exports_for(plugin_module.counts)" in entry


def test_a_plugin_imported_under_two_names_is_one_plugin(tmp_path: Path) -> None:
    found = find_plugin(write(tmp_path, "aliased.py", PROJECTION + "alias = counts\n"))
    assert found.attribute == "counts"


def test_a_file_without_a_plugin_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        BuildError, match="declares no plugin; expected one Handler, Projection or Policy"
    ):
        find_plugin(write(tmp_path, "empty.py", "from evhost import Projection\n"))


def test_a_file_with_two_plugins_is_refused(tmp_path: Path) -> None:
    source = PROJECTION + 'from evhost import Handler\nbooks = Handler("books", "book")\n'
    with pytest.raises(BuildError) as error:
        find_plugin(write(tmp_path, "two.py", source))
    assert (
        "declares 2 plugins: counts (projection counts), books (handler books); expected one"
        in str(error.value)
    )


def test_a_file_that_does_not_import_says_why(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"(?s)importing it raised.*ValueError: plugin name 'Bad'"):
        find_plugin(write(tmp_path, "bad.py", 'from evhost import Projection\nProjection("Bad")\n'))


@pytest.mark.parametrize("name", ["my-plugin.py", "json.py", "evhost.py", "notes.txt"])
def test_file_names_that_cannot_be_the_module_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(BuildError):
        find_plugin(write(tmp_path, name, PROJECTION))


def test_the_command_line_exits_non_zero_with_the_reason(tmp_path: Path) -> None:
    empty = write(tmp_path, "empty.py", "")
    completed = subprocess.run(
        [sys.executable, "-m", "evhost", "build", str(empty), "-o", str(tmp_path / "out.wasm")],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 1
    assert completed.stderr.startswith(f"evhost build: {empty} declares no plugin")
    assert not (tmp_path / "out.wasm").exists()


@pytest.mark.build
def test_a_plugin_builds_into_a_component(tmp_path: Path) -> None:
    source = write(tmp_path, "counting.py", PROJECTION)
    output = tmp_path / "out" / "counting.wasm"
    completed = subprocess.run(
        [sys.executable, "-m", "evhost", "build", str(source), "-o", str(output)],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stderr
    size = output.stat().st_size
    assert completed.stdout == f"built {output} ({size} bytes): projection counts\n"
    # A component: the wasm magic, then the component layer's version.
    assert output.read_bytes()[:8] == b"\0asm\x0d\x00\x01\x00"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["counting.py", "out"]
