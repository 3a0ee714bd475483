"""The "Ask why" computations, made once and shared by every session (like the traces in `shared.py`).

Ablations, sweeps, logit lenses, saliency and rollouts are keyed by the trace's key (checkpoint
identity, text, target) plus their own options; one process-wide LRU bounded by bytes holds them
all, and a value several sessions ask for at the same moment is made once. Every model run takes a
model slot (`shared.model_slot`), as the traces do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import streamlit as st
import torch

from server import shared
from server.lru import ByteLRU
from transformer.checkpoints.format import Checkpoint
from transformer.model.trace import Stream, Trace
from transformer.why import ablation, lens, rollout, saliency

CACHE_BYTES = 512 * 1024**2  # an LM ablation holds two (T, vocab) distributions: 0.5 MB for the shipped lm at 64 tokens


def nbytes(value: object) -> int:
    """Bytes of the tensors a result holds (dataclass fields, dicts of tensors, one level deep), plus a little."""
    total = 10_000
    fields = [getattr(value, f.name) for f in dataclasses.fields(value)] if dataclasses.is_dataclass(value) else [value]
    for field in fields:
        items = field.values() if isinstance(field, dict) else [field]
        total += sum(x.nbytes for x in items if isinstance(x, torch.Tensor))
    return total


@st.cache_resource
def cache() -> ByteLRU[object]:
    return ByteLRU(CACHE_BYTES, nbytes)


def _shared(key: tuple, make: Callable[[], object]) -> object:
    def run() -> object:
        with shared.model_slot():
            return make()

    return cache().get_or_create(key, run)


@st.cache_resource
def parity_cache() -> ByteLRU[dict]:
    """The "Check against transformers" results, one small dict per checkpoint identity (kept: a few hundred bytes each)."""
    return ByteLRU(1024**2, lambda _: 1_000)


def parity(identity: str, folder: str, ckpt: Checkpoint) -> dict:
    """`verify.compare` of a Hugging Face folder against the model loaded from it, once per checkpoint identity.

    Loads the folder with transformers itself and runs both models on a few texts: it takes a model slot, as every run does.
    """
    from transformer.checkpoints import verify  # lazily: transformers is optional and only this button needs it

    def run() -> dict:
        with shared.model_slot():
            return verify.compare(folder, ckpt)

    return parity_cache().get_or_create(identity, run)


def parity_done(identity: str) -> dict | None:
    """The check's result when it has already run for this checkpoint (on this server, by anyone), else None."""
    return parity_cache().get(identity)


def reference_means(identity: str, ckpt: Checkpoint) -> ablation.ReferenceMeans:
    """Each head's mean output over the checkpoint's reference texts (mean ablation), once per checkpoint."""
    return _shared((identity, "reference means"), lambda: ablation.reference_means(ckpt))


def ablate(key: tuple, ckpt: Checkpoint, tokens: tuple[Stream, Stream | None], heads: tuple, mode: str) -> ablation.Ablation:
    """`ablation.ablate` of these heads, once per (trace key, heads, mode)."""
    means = reference_means(key[0], ckpt) if mode == "mean" else None
    return _shared((key, "ablate", tuple(sorted(heads)), mode), lambda: ablation.ablate(ckpt, tokens, heads, mode, means))


def sweep(
    key: tuple,
    ckpt: Checkpoint,
    tokens: tuple[Stream, Stream | None],
    metric: str,
    mode: str,
    positions: tuple[int, ...] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> ablation.Sweep:
    """`ablation.sweep` (every single head knocked out), once per (trace key, metric, mode, positions)."""
    means = reference_means(key[0], ckpt) if mode == "mean" else None
    return _shared(
        (key, "sweep", metric, mode, positions),
        lambda: ablation.sweep(ckpt, tokens, metric, mode, means, positions=positions, on_progress=on_progress),
    )


def logit_lens(key: tuple, ckpt: Checkpoint, trace: Trace, positions: tuple[int, ...] | None = None) -> lens.LogitLens:
    """`lens.logit_lens` of the trace (at `positions`, default all), once per (trace key, positions)."""
    return _shared((key, "lens", positions), lambda: lens.logit_lens(ckpt, trace, positions=positions))


def attribution(
    key: tuple, ckpt: Checkpoint, tokens: tuple[Stream, Stream | None], method: str, position: int | None, steps: int
) -> saliency.Attribution:
    """Gradient × input or integrated gradients of the prediction at `position`, once per (trace key, method, position, steps)."""
    source, target = tokens

    def make() -> saliency.Attribution:
        if method == "integrated gradients":
            return saliency.integrated_gradients(ckpt, source, target, position=position, steps=steps)
        return saliency.gradient_x_input(ckpt, source, target, position=position)

    return _shared((key, "saliency", method, position, steps if method == "integrated gradients" else None), make)


def rollout_maps(key: tuple, trace: Trace, kind: str) -> torch.Tensor:
    """`rollout.rollout_trace` (mean over heads) up to every layer, (n_layers, Tq, Tk), once per (trace key, kind)."""
    return cache().get_or_create((key, "rollout", kind), lambda: rollout.rollout_trace(trace, kind))


def flow_map(key: tuple, trace: Trace, kind: str, layer: int) -> torch.Tensor:
    """`rollout.flow_trace` through layers 0..layer, (Tq, Tk), once per (trace key, kind, layer); FlowTooLong past its limits.

    Max flow is pure Python (networkx) and holds the GIL: it runs in a model slot, so two at most at once.
    """
    return _shared((key, "flow", kind, layer), lambda: rollout.flow_trace(trace, kind, layer=layer))
