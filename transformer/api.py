"""The notebook-sized public API: build or load a model, trace a text, decode greedily."""

from __future__ import annotations

import torch

from transformer.checkpoints.format import Checkpoint
from transformer.model.attention import HeadAblation, block_max, pool_blocks
from transformer.model.config import ModelConfig
from transformer.model.network import TransformerModel
from transformer.model.trace import AttentionMaps, Stream, Trace, to_cpu


def build_model(config: ModelConfig, seed: int | None = None) -> TransformerModel:
    """A freshly initialised model for `config` (seeded if `seed` is given)."""
    if seed is not None:
        torch.manual_seed(seed)
    return TransformerModel(config)


@torch.inference_mode()
def greedy_decode(
    model: TransformerModel,
    src_ids: list[int],
    bos_id: int,
    eos_id: int,
    max_new_tokens: int | None = None,
    ablate: HeadAblation | None = None,
) -> list[int]:
    """Translate greedily: repeatedly append the most likely next token until EOS. Returns ids without BOS/EOS.

    ablate: heads to knock out on every step (a `HeadAblation` with keep rows of batch 1).
    """
    cfg = model.cfg
    limit = cfg.max_len - 1 if max_new_tokens is None else min(max_new_tokens, cfg.max_len - 1)
    src = torch.tensor([src_ids], device=model.device)
    memory, _ = model.encode(src, ablate=ablate)
    out = [bos_id]
    for _ in range(limit):
        hidden, _ = model.decode(torch.tensor([out], device=model.device), memory, ablate=ablate)
        next_id = int(model.lm_logits(hidden[:, -1]).argmax(-1))
        if next_id == eos_id:
            break
        out.append(next_id)
    return out[1:]


def streams(
    ckpt: Checkpoint, text: str, target: str | None = None, max_new_tokens: int | None = None
) -> tuple[Stream, Stream | None]:
    """The source tokens of `text` and, for an encoder-decoder, the decoder's tokens (BOS first).

    The decoder's text is `target`, or when None the greedy translation. Text longer than the
    model's max_len is truncated; `.truncated` says by how much.
    """
    model, tok, cfg = ckpt.model, ckpt.tokenizer, ckpt.model.cfg
    source = tok.encode(text, max_len=cfg.max_len)
    if cfg.kind != "encoder-decoder":
        return source, None
    if target is None:
        ids = greedy_decode(model, list(source.ids), tok.bos_id, tok.eos_id, max_new_tokens)
        return source, Stream(
            text=tok.decode(ids),
            ids=(tok.bos_id, *ids),
            tokens=tuple(tok.id_to_token(i) for i in (tok.bos_id, *ids)),
            offsets=((0, 0),) * (len(ids) + 1),
        )
    enc = tok.encode(target, add_special_tokens=False, max_len=cfg.max_len - 1)
    return source, Stream(
        text=target,
        ids=(tok.bos_id, *enc.ids),
        tokens=(tok.id_to_token(tok.bos_id), *enc.tokens),
        offsets=((0, 0), *enc.offsets),
        truncated=enc.truncated,
    )


def _inputs(model: TransformerModel, source: Stream, target: Stream | None) -> tuple[torch.Tensor, ...]:
    src = torch.tensor([source.ids], dtype=torch.long, device=model.device)
    if target is None:
        return (src,)
    return src, torch.tensor([target.ids], dtype=torch.long, device=model.device)


@torch.inference_mode()
def trace_text(
    ckpt: Checkpoint,
    text: str,
    target: str | None = None,
    max_new_tokens: int | None = None,
    tokens: tuple[Stream, Stream | None] | None = None,
) -> Trace:
    """Run `text` through the checkpoint's model and return the full trace, on the CPU.

    For an encoder-decoder, `target` is the decoder's text; when None it is decoded greedily.
    Text longer than the model's max_len is truncated; `trace.source.truncated` says by how much.
    `tokens`: `streams(ckpt, text, target)` when the caller already has them (skips a second greedy decoding).
    """
    source, target_stream = tokens or streams(ckpt, text, target, max_new_tokens)
    _, trace = ckpt.model(*_inputs(ckpt.model, source, target_stream), trace=True)
    trace = to_cpu(trace)
    return Trace(
        encoder=trace.encoder,
        decoder=trace.decoder,
        logits=trace.logits,
        probs=trace.probs,
        source=source,
        target=target_stream,
    )


@torch.inference_mode()
def attention_maps(
    ckpt: Checkpoint,
    text: str,
    target: str | None = None,
    max_cells: int = 64,
    tokens: tuple[Stream, Stream | None] | None = None,
) -> AttentionMaps:
    """Every head's weights for `text`, block-max pooled to at most max_cells × max_cells, without a full trace.

    The model runs its manual attention a block of queries at a time and keeps only the pooled
    weights, so at 2048 tokens it holds megabytes, not the gigabytes of a trace. The numbers equal
    `pool_trace(trace_text(...))` up to float rounding (see `attention.pooled_attention`).
    """
    source, target_stream = tokens or streams(ckpt, text, target)
    _, maps = ckpt.model(*_inputs(ckpt.model, source, target_stream), pool=max_cells)
    return AttentionMaps(
        maps={kind: m[:, 0].float().cpu() for kind, m in maps.items()},
        max_cells=max_cells,
        source=source,
        target=target_stream,
    )


def pool_trace(trace: Trace, max_cells: int = 64) -> AttentionMaps:
    """A full trace's weights pooled as `attention_maps` pools them (block max to at most max_cells × max_cells)."""
    maps = {}
    for kind in trace.kinds:
        layers = [trace.attention(kind, layer).weights[0] for layer in range(trace.n_layers(kind))]  # each (H, Tq, Tk)
        blocks = pool_blocks(*layers[0].shape[-2:], max_cells)
        maps[kind] = torch.stack([block_max(w, *blocks) for w in layers]).float()  # pooled layer by layer: no full copy
    return AttentionMaps(maps=maps, max_cells=max_cells, source=trace.source, target=trace.target)
