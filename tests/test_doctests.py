"""The examples in the docstrings run: every module of fc_jax whose docstrings hold a `>>>`."""

import doctest
import importlib
from pathlib import Path

import pytest

import fc_jax

ROOT = Path(fc_jax.__file__).parent
MODULES = sorted(
    ".".join(p.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
    for p in ROOT.rglob("*.py")
    if ">>> " in p.read_text()
)


def test_some_modules_have_examples():
    assert "fc_jax.optim" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result
