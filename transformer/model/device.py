"""Which device the model runs on: CUDA if there is one, else Apple's MPS, else the CPU."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

ENV_VAR = "ATTNVIZ_DEVICE"  # e.g. ATTNVIZ_DEVICE=cpu forces the CPU on a GPU machine


def pick_device(requested: str | torch.device | None = None) -> torch.device:
    """The argument if given, else $ATTNVIZ_DEVICE, else the best available accelerator."""
    choice = requested if requested is not None else os.environ.get(ENV_VAR) or None
    if choice is not None:
        device = torch.device(choice)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {choice!r} was asked for, but CUDA is not available here")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError(f"device {choice!r} was asked for, but MPS is not available here")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block on `n` intra-op torch threads, then put back the count that was set before.

    torch's thread count is one setting for the whole process: a caller that needs a known count
    for one computation (a server's model run, a test's reference) sets it around that computation.
    Float32 sums split over another number of threads may round differently in the last bits.
    """
    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
