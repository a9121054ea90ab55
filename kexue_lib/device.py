"""Device selection, seeding and reproducible random data.

Every notebook takes its device from :func:`get_device` and its random data from
:func:`randn` / :func:`rand`, which draw on a seeded *CPU* generator and then move the
result. A CPU run and a GPU run therefore start from the same numbers (PyTorch's device
RNGs differ, so drawing on the device would not).
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from ._checks import check_int

__all__ = ["get_device", "seed_everything", "generator", "randn", "rand", "DEVICE_ENV"]

#: Environment variable that overrides the automatic choice, e.g. ``KEXUE_DEVICE=cpu``.
DEVICE_ENV = "KEXUE_DEVICE"


def get_device(prefer: str | None = None) -> torch.device:
    """Return the device notebooks should compute on.

    Order: ``prefer`` if given, else the ``KEXUE_DEVICE`` environment variable, else CUDA if
    available, then Apple MPS, then CPU. A requested device that is not available raises
    ``ValueError`` rather than silently falling back.
    """
    choice = prefer if prefer is not None else os.environ.get(DEVICE_ENV, "").strip()
    if choice:
        try:
            dev = torch.device(choice)
        except RuntimeError as err:
            raise ValueError(f"{DEVICE_ENV}/prefer: unknown device {choice!r}") from err
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"{DEVICE_ENV}/prefer: {choice!r} requested but CUDA is not available")
        if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"{DEVICE_ENV}/prefer: {choice!r} requested but MPS is not available")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python's, NumPy's and PyTorch's global generators; return a seeded CPU generator."""
    seed = check_int(seed, "seed", ge=0)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return generator(seed)


def generator(seed: int = 0) -> torch.Generator:
    """A fresh CPU ``torch.Generator`` seeded with ``seed``."""
    seed = check_int(seed, "seed", ge=0)
    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    return g


def _draw(kind, shape, gen, seed, device, dtype):
    if gen is None:
        gen = generator(0 if seed is None else seed)
    elif seed is not None:
        raise ValueError("seed and gen: give one, not both")
    shape = tuple(check_int(s, "shape", ge=0) for s in shape)
    # Draw in float64 on the CPU so the numbers do not depend on dtype or device, then cast.
    x = kind(shape, generator=gen, dtype=torch.float64, device="cpu")
    return x.to(device=device if device is not None else "cpu", dtype=dtype)


def randn(
    *shape: int,
    gen: torch.Generator | None = None,
    seed: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal samples of ``shape``, drawn on the CPU and moved to ``device``.

    Pass a generator ``gen`` to continue a stream, or a ``seed`` for a one-off draw
    (default seed 0).
    """
    return _draw(torch.randn, shape, gen, seed, device, dtype)


def rand(
    *shape: int,
    gen: torch.Generator | None = None,
    seed: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Uniform samples on [0, 1) of ``shape``, drawn on the CPU and moved to ``device``."""
    return _draw(torch.rand, shape, gen, seed, device, dtype)
