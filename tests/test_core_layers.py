"""The core (``mfrbench/`` outside ``mfrbench/cli/``) never imports the plugin packages.

``mfrbench.generators`` and ``mfrbench.recognizers`` sit above the core: they import it, the CLI
imports both. A core module reaching up (even inside a function, or through an importlib string)
makes a package cycle; before issue 11, ``protocols.py`` -> ``generators.base`` -> the core was one,
and ``embedders.py`` / ``quickstart.py`` imported the recognizers inside functions.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import mfrbench

CORE = Path(mfrbench.__file__).parent
PLUGINS = ("mfrbench.generators", "mfrbench.recognizers")
#: A string that is a whole dotted module path of a plugin package (what importlib or a LazyRegistry takes).
MODULE_STRING = re.compile(r"^(mfrbench\.)?(generators|recognizers)(\.\w+)*$")


def _core_files() -> list[Path]:
    return sorted(p for p in CORE.rglob("*.py") if "cli" not in p.relative_to(CORE).parts)


def _module_of(path: Path) -> str:
    rel = path.relative_to(CORE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.AST, module: str, is_pkg: bool) -> list[str]:
    """Absolute names an ``import`` / ``from ... import`` node brings in (relative ones resolved)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".")
            base = base if is_pkg else base[:-1]
            base = base[:len(base) - (node.level - 1)]
            root = ".".join(base + ([node.module] if node.module else []))
        else:
            root = node.module or ""
        return [root] + [f"{root}.{a.name}" for a in node.names]
    return []


def _violations(src: str, module: str, *, is_pkg: bool = False, label: str = "") -> list[str]:
    out = []
    for node in ast.walk(ast.parse(src, filename=label or module)):
        for name in _imported(node, module, is_pkg):
            if name.startswith(PLUGINS) or name.split(".")[0] in ("generators", "recognizers"):
                out.append(f"{label or module}:{node.lineno}: imports {name}")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_STRING.match(node.value):
            out.append(f"{label or module}:{node.lineno}: names the module {node.value!r}")
    return out


def _file_violations(path: Path) -> list[str]:
    return _violations(path.read_text(encoding="utf-8"), _module_of(path), is_pkg=path.name == "__init__.py",
                       label=str(path.relative_to(CORE.parent)))


def test_core_never_imports_generators_or_recognizers():
    """Every core module, every import (top level or inside a function) and every module-name string."""
    files = _core_files()
    assert any(p.name == "generate.py" for p in files) and not any("cli" in p.parts for p in files)
    bad = [v for p in files for v in _file_violations(p)]
    assert not bad, "the core reaches up into the plugin packages:\n" + "\n".join(bad)


def test_the_checker_catches_each_form():
    """The walker flags a function-level import, an importlib string and a relative import; not prose."""
    src = ("def f():\n    from mfrbench.generators.base import GENERATORS\n"
           "import importlib\nimportlib.import_module('mfrbench.recognizers.embed')\n"
           "from .recognizers import train\n"
           "MSG = 'build it with mfrbench.generators.base.generator_factory (the CLI does)'\n")
    found = _violations(src, "mfrbench.probe")
    assert sorted(f.split(":")[1] for f in found) == ["2", "2", "4", "5", "5"], found
