"""The notebook-sized public API: build or load a model, trace a text, decode greedily."""

from __future__ import annotations

import torch

from .checkpoint import Checkpoint
from .config import ModelConfig
from .model import TransformerModel
from .trace import Stream, Trace, to_cpu


def build_model(config: ModelConfig, seed: int | None = None) -> TransformerModel:
    """A freshly initialised model for `config` (seeded if `seed` is given)."""
    if seed is not None:
        torch.manual_seed(seed)
    return TransformerModel(config)


@torch.inference_mode()
def greedy_decode(
    model: TransformerModel, src_ids: list[int], bos_id: int, eos_id: int, max_new_tokens: int | None = None
) -> list[int]:
    """Translate greedily: repeatedly append the most likely next token until EOS. Returns ids without BOS/EOS."""
    cfg = model.cfg
    limit = cfg.max_len - 1 if max_new_tokens is None else min(max_new_tokens, cfg.max_len - 1)
    src = torch.tensor([src_ids], device=model.device)
    memory, _ = model.encode(src)
    out = [bos_id]
    for _ in range(limit):
        hidden, _ = model.decode(torch.tensor([out], device=model.device), memory)
        next_id = int(model.lm_logits(hidden[:, -1]).argmax(-1))
        if next_id == eos_id:
            break
        out.append(next_id)
    return out[1:]


@torch.inference_mode()
def trace_text(ckpt: Checkpoint, text: str, target: str | None = None, max_new_tokens: int | None = None) -> Trace:
    """Run `text` through the checkpoint's model and return the full trace, on the CPU.

    For an encoder-decoder, `target` is the decoder's text; when None it is decoded greedily.
    Text longer than the model's max_len is truncated; `trace.source.truncated` says by how much.
    """
    model, tok, cfg = ckpt.model, ckpt.tokenizer, ckpt.model.cfg
    source = tok.encode(text, max_len=cfg.max_len)
    src = torch.tensor([source.ids], dtype=torch.long, device=model.device)
    target_stream = None
    if cfg.kind == "encoder-decoder":
        if target is None:
            ids = greedy_decode(model, list(source.ids), tok.bos_id, tok.eos_id, max_new_tokens)
            target_stream = Stream(
                text=tok.decode(ids),
                ids=(tok.bos_id, *ids),
                tokens=tuple(tok.id_to_token(i) for i in (tok.bos_id, *ids)),
                offsets=((0, 0),) * (len(ids) + 1),
            )
        else:
            enc = tok.encode(target, add_special_tokens=False, max_len=cfg.max_len - 1)
            target_stream = Stream(
                text=target,
                ids=(tok.bos_id, *enc.ids),
                tokens=(tok.id_to_token(tok.bos_id), *enc.tokens),
                offsets=((0, 0), *enc.offsets),
                truncated=enc.truncated,
            )
        tgt = torch.tensor([target_stream.ids], dtype=torch.long, device=model.device)
        _, trace = model(src, tgt, trace=True)
    else:
        _, trace = model(src, trace=True)
    trace = to_cpu(trace)
    return Trace(
        encoder=trace.encoder,
        decoder=trace.decoder,
        logits=trace.logits,
        probs=trace.probs,
        source=source,
        target=target_stream,
    )
