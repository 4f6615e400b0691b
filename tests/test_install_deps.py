"""What a user installs is what runs: every third-party import of the installed code is a declared dependency."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ("mfrbench", "generators", "recognizers")


def _runtime_imports() -> dict[str, str]:
    """Top-level third-party module -> one file importing it, over the code `pip install .` installs."""
    found: dict[str, str] = {}
    for top in RUNTIME:
        for path in sorted((ROOT / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
                for name in names:
                    mod = name.split(".")[0]
                    if mod not in sys.stdlib_module_names and mod not in RUNTIME and mod != "__future__":
                        found.setdefault(mod, str(path.relative_to(ROOT)))
    return found


def _dists_of(module: str, index: dict[str, list[str]]) -> list[str]:
    """Distributions providing ``module``; their file lists when top_level.txt omits it (dlib-bin names only
    its extension module there)."""
    return index.get(module) or [d.metadata["Name"] for d in importlib.metadata.distributions()
                                 if any(f.parts[0] == module for f in (d.files or []))] or [module]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_runtime_import_is_a_declared_dependency():
    """The old code imported scikit-image (a dev extra) in `quality` and MFGAN's read-out."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # the dev extra (tests, CI) does not count: a user never needs it to run a command
    lists = {"dependencies": project["dependencies"],
             **{k: v for k, v in project.get("optional-dependencies", {}).items() if k != "dev"}}
    declared = {_norm(re.split(r"[\s<>=~!;\[]", req, maxsplit=1)[0]): where for where, reqs in lists.items()
                for req in reqs}
    dists = importlib.metadata.packages_distributions()
    missing = {mod: path for mod, path in _runtime_imports().items()
               if not any(_norm(d) in declared for d in _dists_of(mod, dists))}
    assert missing == {}, f"imported at run time but only in the dev extra or nowhere in pyproject.toml: {missing}"
