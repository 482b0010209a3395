"""The import graph flows one way: tools <- envs <- rollout <- algorithms <- trainer <- CLI.

Every import in every module counts, lazy ones inside functions included, so a shortcut taken
"just here" fails the test. ``envs/`` and ``tools/`` never import torch or transformers.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# package directory -> its name when installed
PACKAGES = {ROOT / "pbsd_agents": "pbsd_agents", ROOT / "envs": "pbsd_agents.envs", ROOT / "tools": "pbsd_agents.tools"}
LAYERS = ["tools", "envs", "rollout", "algorithms", "trainer", "cli"]
# modules of the rollout layer: rendering, episodes, trajectories, engines (and their decoding), models and the checks on them
ROLLOUT = {"episode", "chat", "trajectory", "engines", "decoding", "models", "loading", "presets", "rollout", "invariants", "testing"}
HEAVY = ("torch", "transformers", "peft")


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "pbsd_agents" or len(parts) == 1:
        return None
    head = parts[1]
    if head in ("tools", "envs", "algorithms", "cli"):
        return head
    return "rollout" if head in ROLLOUT else "trainer"


def _modules():
    for folder, package in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            yield ".".join([package, *parts]), path


def _imports(module: str, path: Path) -> set[str]:
    out = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.add(name)
            out.update(f"{name}.{a.name}" for a in node.names)  # `from . import envs` imports a module
    return out


MODULES = dict(_modules())


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_points_up(module):
    layer = _layer(module)
    if layer is None:  # the package's own __init__ registers envs and tools only
        return
    rank = LAYERS.index(layer)
    up = sorted(i for i in _imports(module, MODULES[module])
                if i in MODULES and _layer(i) is not None and LAYERS.index(_layer(i)) > rank)
    assert not up, f"{module} ({layer} layer) imports a higher layer: {up}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) in ("tools", "envs")))
def test_envs_and_tools_never_import_torch(module):
    heavy = sorted(i for i in _imports(module, MODULES[module]) if i.split(".")[0] in HEAVY)
    assert not heavy, f"{module} imports {heavy}"
    if _layer(module) == "tools":
        envs = sorted(i for i in _imports(module, MODULES[module]) if _layer(i) == "envs")
        assert not envs, f"{module} (tools) imports envs: {envs}"


def test_importing_the_package_loads_no_torch():
    code = "import sys, pbsd_agents, pbsd_agents.testing, pbsd_agents.episode; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
