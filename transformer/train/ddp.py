"""Distributed data parallel on PyTorch's own engine: set up by `torchrun`, gloo on CPU, nccl on GPU.

Every rank builds the same model from the same seed and draws the same global batch indices for
a step; rank r trains on indices[r::world_size] and DDP averages the gradients, so the weights
stay identical on every rank. Only rank 0 writes files.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from transformer.model.device import pick_device


@dataclass(frozen=True)
class Dist:
    """Where this process sits in the job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(requested_device: str | None = None) -> tuple[Dist, torch.device]:
    """Join the process group if torchrun started us (WORLD_SIZE > 1); pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), pick_device(requested_device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        device = torch.device("cpu")  # gloo cannot reduce MPS tensors
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local_rank), device


def wrap(model: torch.nn.Module, where: Dist, device: torch.device) -> torch.nn.Module:
    """The model DDP-wrapped when distributed, else unchanged."""
    if not where.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def broadcast_text(text: str, where: Dist, device: torch.device) -> str:
    """Rank 0's `text` on every rank (as a byte tensor: nothing is pickled)."""
    if not where.enabled:
        return text
    data = torch.tensor(list(text.encode()), dtype=torch.uint8, device=device) if where.is_main else None
    size = torch.tensor([0 if data is None else data.numel()], dtype=torch.long, device=device)
    dist.broadcast(size, 0)
    buf = data if data is not None else torch.empty(int(size), dtype=torch.uint8, device=device)
    dist.broadcast(buf, 0)
    return bytes(buf.cpu().tolist()).decode()


def weights_digest(model: torch.nn.Module) -> str:
    """A short SHA-256 of all weights, to check that every rank ended with the same model."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def teardown(where: Dist) -> None:
    if where.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
