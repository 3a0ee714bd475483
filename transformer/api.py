"""The notebook-sized public API: build or load a model, trace a text, decode greedily."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from transformer.checkpoints.format import Checkpoint
from transformer.decoding import Decoding
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
    decoding: Decoding,
    max_new_tokens: int | None = None,
    ablate: HeadAblation | None = None,
) -> list[int]:
    """Translate greedily as the model's own `generate(num_beams=1, do_sample=False)` would (`decoding.py`'s rules).

    Returns the tokens after the start token (a forced BOS or language token included), without the EOS.
    ablate: heads to knock out on every step (a `HeadAblation` with keep rows of batch 1).
    """
    return greedy_decode_batch(model, [src_ids], decoding, max_new_tokens=max_new_tokens, ablate=ablate)[0]


@torch.inference_mode()
def greedy_decode_batch(
    model: TransformerModel,
    sources: Sequence[Sequence[int]],
    decoding: Decoding,
    pad_id: int = 0,
    max_new_tokens: int | None = None,
    ablate: HeadAblation | None = None,
) -> list[list[int]]:
    """`greedy_decode` for many sources at once (right-padded with `pad_id`, masked), row r knocked out by `ablate`'s
    row r: each row's tokens after the start token, without the end token.

    Each step runs only the new position, reading the earlier ones' keys and values (`decode_step`), and applies the
    model's generation rules to each row's own sequence (`Decoding.process`), up to `Decoding.limit`. Every row steps
    until all have ended; a finished row's later tokens are dropped (causal self-attention: they never change its
    earlier predictions). One source with no padding runs exactly the computation of a batch of one.
    """
    device = model.device
    width = max(len(s) for s in sources)
    src = torch.tensor([[*s, *[pad_id] * (width - len(s))] for s in sources], dtype=torch.long, device=device)
    keep = torch.tensor([[True] * len(s) + [False] * (width - len(s)) for s in sources], device=device)
    memory, _ = model.encode(src, keep, ablate=ablate)
    limit = decoding.limit(model.cfg.max_len, max_new_tokens)
    ids = torch.full((len(sources), 1), decoding.start, dtype=torch.long, device=device)  # (B, 1 + steps)
    ends = torch.tensor(decoding.eos, device=device)
    done = torch.zeros(len(sources), dtype=torch.bool, device=device)
    cache = None
    while ids.shape[1] < limit:
        hidden, cache = model.decode_step(ids[:, -1:], ids.shape[1] - 1, memory, keep, cache=cache, ablate=ablate)
        nxt = decoding.process(ids, model.lm_logits(hidden[:, -1]), limit).argmax(-1)  # (B,)
        done |= torch.isin(nxt, ends)
        if bool(done.all()):
            break
        ids = torch.cat([ids, torch.where(done, decoding.end, nxt)[:, None]], dim=1)
    return [r[: next((i for i, t in enumerate(r) if t in decoding.eos), len(r))] for r in ids[:, 1:].tolist()]


def streams(
    ckpt: Checkpoint, text: str, target: str | None = None, max_new_tokens: int | None = None
) -> tuple[Stream, Stream | None]:
    """The source tokens of `text` and, for an encoder-decoder, the decoder's tokens (its start token first).

    The decoder's text is `target` (after the start token and any forced BOS or language token), or when None
    the greedy translation. Text longer than the model's max_len is truncated; `.truncated` says by how much.
    """
    model, tok, cfg = ckpt.model, ckpt.tokenizer, ckpt.model.cfg
    source = tok.encode(text, max_len=cfg.max_len)
    if cfg.kind != "encoder-decoder":
        return source, None
    decoding = ckpt.decoding
    if target is None:
        ids = greedy_decode(model, list(source.ids), decoding, max_new_tokens)
        return source, Stream(
            text=tok.decode(ids),
            ids=(decoding.start, *ids),
            tokens=tuple(tok.id_to_token(i) for i in (decoding.start, *ids)),
            offsets=((0, 0),) * (len(ids) + 1),
        )
    prefix = decoding.prefix
    enc = tok.encode(target, add_special_tokens=False, max_len=cfg.max_len - len(prefix))
    return source, Stream(
        text=target,
        ids=(*prefix, *enc.ids),
        tokens=(*(tok.id_to_token(i) for i in prefix), *enc.tokens),
        offsets=(*((0, 0),) * len(prefix), *enc.offsets),
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
