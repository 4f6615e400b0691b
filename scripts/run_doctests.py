"""Run the ``>>>`` examples in the library's docstrings (CI step; exit status 1 on any failure).

Why not ``pytest --doctest-modules generators/``: pytest imports a file by its path, so
``generators/mfgan.py`` becomes a second module ``generators.mfgan`` next to the installed
``mfrbench.generators.mfgan``, and its registry decorators then fail with "already registered".
Here every module is imported by its installed name (``mfrbench.generators.*``,
``mfrbench.recognizers.*``), exactly as users import it. Only modules whose source holds ``>>>``
are imported, so a module with a heavy optional dependency and no examples costs nothing.

    .venv/bin/python scripts/run_doctests.py            # all three packages
    .venv/bin/python scripts/run_doctests.py -v         # list every module and its counts
"""

from __future__ import annotations

import argparse
import doctest
import importlib
import importlib.util
import pkgutil
import sys

PACKAGES = ("mfrbench", "mfrbench.generators", "mfrbench.recognizers")
# pytest's default for doctests, so an example written for `pytest --doctest-modules` runs the same here.
OPTIONFLAGS = doctest.ELLIPSIS


def modules_with_examples(packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """Names of the modules under ``packages`` whose source file contains a ``>>>`` prompt."""
    names = []
    for pkg_name in packages:  # generators/ and recognizers/ are not under mfrbench/: walked on their own
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=pkg_name + "."):
            spec = importlib.util.find_spec(info.name)
            origin = spec.origin if spec else None
            if origin and origin.endswith(".py"):
                with open(origin, encoding="utf-8") as f:
                    if ">>>" in f.read():
                        names.append(info.name)
    return sorted(set(names))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="print each module's attempted/failed counts")
    args = parser.parse_args(argv)
    failed = attempted = 0
    for name in modules_with_examples():
        result = doctest.testmod(importlib.import_module(name), optionflags=OPTIONFLAGS, verbose=False)
        failed += result.failed
        attempted += result.attempted
        if args.verbose or result.failed:
            print(f"{name}: {result.attempted} examples, {result.failed} failed")
    print(f"doctests: {attempted} examples, {failed} failed")
    return 1 if failed or not attempted else 0


if __name__ == "__main__":
    sys.exit(main())
