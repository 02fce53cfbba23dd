"""A feature of an optional extra that is not installed says which extra to install."""

from __future__ import annotations

import sys

import pytest

from cnnlens.core.errors import CnnlensError, MissingExtraError
from cnnlens.core.optional import require


def test_installed_package_is_returned():
    assert require("json", "reading") is sys.modules["json"]


def test_missing_package_names_its_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # as if umap-learn were not installed
    with pytest.raises(MissingExtraError) as info:
        require("umap", "cnnlens embed --method umap")
    assert str(info.value) == (
        "cnnlens embed --method umap needs umap-learn, which is not installed: "
        "pip install 'cnnlens[analysis]'"
    )
    assert isinstance(info.value, CnnlensError) and isinstance(info.value, ImportError)


def test_unknown_package_names_itself():
    with pytest.raises(MissingExtraError, match="pip install no_such_pkg_xyz$"):
        require("no_such_pkg_xyz.sub", "a test")
