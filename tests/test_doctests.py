"""Run the ``Example:`` blocks of public modules as doctests (imported by their installed names)."""

import doctest
import importlib
import pkgutil

import pytest

import pbsd_agents


def _modules():
    names = []
    for pkg in ("pbsd_agents", "pbsd_agents.tools", "pbsd_agents.envs"):
        mod = importlib.import_module(pkg)
        names.append(pkg)
        names += [m.name for m in pkgutil.walk_packages(mod.__path__, prefix=f"{pkg}.")]
    return sorted(set(names))


@pytest.mark.parametrize("name", _modules())
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
