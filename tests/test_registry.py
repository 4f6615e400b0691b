import re

import pytest

from mfrbench.cli.plugins import all_registries
from mfrbench.registry import Registry, UnknownNameError


def test_register_create_list_and_miss_lists_names():
    reg: Registry = Registry("widget")

    @reg.register
    def small_widget(size: int = 1):
        return ("small", size)

    @reg.register(name="big")
    def _big(size: int = 10):
        return ("big", size)

    assert reg.names() == ["big", "small-widget"]
    assert reg.names("s*") == ["small-widget"]
    assert reg.create("small_widget", size=None) == ("small", 1)  # None-valued kwargs use defaults
    assert reg.create("big", size=3) == ("big", 3)
    assert "small-widget" in reg and len(reg) == 2
    with pytest.raises(UnknownNameError, match=re.escape("Unknown widget 'bigg'. Available: big, small-widget")):
        reg.create("bigg")


def test_duplicate_registration_raises():
    reg: Registry = Registry("widget")
    reg.register(lambda: 1, name="a")
    with pytest.raises(ValueError, match="already registered"):
        reg.register(lambda: 2, name="a")


def test_all_registries_load():
    regs = all_registries()
    assert {"datasets", "detectors", "landmarkers", "generators"} <= set(regs)
    assert {"lfw", "celeba", "ffhq", "folder", "rmfrd", "mfr2", "masked-photos", "synthetic"} <= set(
        regs["datasets"].names())


@pytest.mark.parametrize("module", ["mtf", "cyclegan", "iamgan", "mfgan", "gan.contract", "gan.train", "base", "seg",
                                    "parts"])
def test_each_generator_module_imports_first_in_a_fresh_interpreter(module):
    """Plugin modules import their registry's module; registries import plugins lazily, so any
    import order works (no circular import)."""
    import subprocess
    import sys

    code = (f"import mfrbench.generators.{module}; from mfrbench.generators.base import list_generators; "
            "from mfrbench.generators.gan.contract import GAN_METHODS; print(list_generators(), GAN_METHODS.names())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "'mfgan-no-sty'" in out.stdout and "'mtf'" in out.stdout
