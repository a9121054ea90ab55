"""kexue_lib: tested, device-agnostic PyTorch implementations behind the kexue-book notebooks.

Modules by topic (each public function's docstring names the post that derives it):

- :mod:`kexue_lib.device`      device choice, seeding, CPU-drawn random data
- :mod:`kexue_lib.plotting`    the book's matplotlib style
- :mod:`kexue_lib.widgets`     the one widget helper (``interact``, ``Slider``, ``Choice``)
- :mod:`kexue_lib.activations` SquarePlus and friends (P08)
- :mod:`kexue_lib.probability` softmax, sparsemax, entmax and their losses (P01)
- :mod:`kexue_lib.attention`   attention scale and gradient analysis (P12)
"""
from .device import get_device, generator, rand, randn, seed_everything
from .plotting import use_style
from .widgets import Choice, Slider, interact

__version__ = "0.1.0"

__all__ = [
    "get_device", "generator", "rand", "randn", "seed_everything",
    "use_style", "Choice", "Slider", "interact", "__version__",
]
