"""The WIT this package ships is the repository's, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from evhost._build import wit_dir

from conftest import REPO


def test_the_packaged_wit_is_the_repositorys() -> None:
    repository_wit = REPO / "wit" / "0.1.0" / "plugin.wit"
    if not repository_wit.is_file():
        pytest.skip("not run inside an evhost checkout")
    packaged: Path = wit_dir() / "plugin.wit"
    assert packaged.read_bytes() == repository_wit.read_bytes(), (
        "sdk/python/evhost/wit/plugin.wit differs from wit/0.1.0/plugin.wit; copy it over"
    )
