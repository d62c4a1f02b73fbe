"""The product packages say they are typed (PEP 561), as pyproject's package data promises."""

from __future__ import annotations

import tomllib
from importlib.resources import files
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("package", ["bot", "actions"])
def test_product_package_carries_a_py_typed_marker(package: str) -> None:
    assert files(package).joinpath("py.typed").is_file(), f"{package}/py.typed is missing"


def test_py_typed_is_shipped_as_package_data() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert any("py.typed" in patterns for patterns in data.values())
