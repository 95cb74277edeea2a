"""The public modules' docstring examples run (and give what they show)."""

from __future__ import annotations

import doctest
import importlib
import re
from importlib.metadata import version

import pytest

import daskgmm

PUBLIC = ["daskgmm", "daskgmm.mixture", "daskgmm.bayesian", "daskgmm.cluster", "daskgmm.datasets"]


@pytest.mark.parametrize("name", PUBLIC)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_the_class_docstring_has_an_example():
    finder = doctest.DocTestFinder()
    (test,) = [
        t for t in finder.find(daskgmm.GaussianMixture) if t.name.endswith("GaussianMixture")
    ]
    assert len(test.examples) >= 5


def test_one_version_string():
    assert version("daskgmm") == daskgmm.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", daskgmm.__version__)
    changelog = open(__file__.replace("tests/test_docs.py", "CHANGELOG.md")).read()
    assert f"## {daskgmm.__version__} " in changelog
