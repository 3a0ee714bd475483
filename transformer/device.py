"""Which device the model runs on: CUDA if there is one, else Apple's MPS, else the CPU."""

from __future__ import annotations

import os

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
