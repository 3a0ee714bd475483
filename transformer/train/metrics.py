"""Quality metrics on held-out data: exact match, classification accuracy, the Linzen agreement probe.

All run batched and without gradients, so a few hundred examples take about a second on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from transformer.checkpoints.tokenizer import Tokenizer
from transformer.data import AgreementProbe
from transformer.data.tasks import Task, _pad
from transformer.model.network import TransformerModel


@torch.inference_mode()
def greedy_decode_batch(
    model: TransformerModel, sources: Sequence[Sequence[int]], bos_id: int, eos_id: int, pad_id: int, max_new_tokens: int
) -> list[list[int]]:
    """Greedy decoding of many sources at once; each result is the ids up to (not including) EOS.

    Gives the same tokens as `api.greedy_decode` one source at a time: padded source keys get
    zero attention and decoder positions never see the padding fed after a finished row's EOS.
    """
    device = model.device
    src = _pad([tuple(s) for s in sources], pad_id).to(device)
    keep = src != pad_id  # (B, Ts)
    memory, _ = model.encode(src, keep)
    out = torch.full((len(sources), 1), bos_id, dtype=torch.long, device=device)  # (B, 1)
    done = torch.zeros(len(sources), dtype=torch.bool, device=device)
    for _ in range(min(max_new_tokens, model.cfg.max_len - 1)):
        hidden, _ = model.decode(out, memory, memory_keep=keep)
        nxt = model.lm_logits(hidden[:, -1]).argmax(-1)  # (B,)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        out = torch.cat([out, nxt[:, None]], dim=1)
        done |= nxt == eos_id
        if bool(done.all()):
            break
    results = []
    for row in out[:, 1:].tolist():
        results.append(row[: row.index(eos_id)] if eos_id in row else row)
    return results


def exact_match(model: TransformerModel, tok: Tokenizer, task: Task, examples: Sequence[Any], batch_size: int = 256) -> dict:
    """Fraction of sources whose greedy translation equals the reference target token for token."""
    hits = 0
    for i in range(0, len(examples), batch_size):
        chunk = [task.encode(tok, ex, model.cfg.max_len) for ex in examples[i : i + batch_size]]
        limit = max(len(e.tgt) for e in chunk) + 5
        preds = greedy_decode_batch(model, [e.src for e in chunk], tok.bos_id, tok.eos_id, tok.pad_id, limit)
        hits += sum(list(e.tgt) == p for e, p in zip(chunk, preds))
    return {"exact_match": hits / len(examples), "n": len(examples)}


@torch.inference_mode()
def classifier_accuracy(
    model: TransformerModel, tok: Tokenizer, task: Task, examples: Sequence[Any], batch_size: int = 256
) -> dict:
    """Accuracy overall and on examples whose checked verb has an attractor between it and its subject."""
    correct: list[bool] = []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        batch = task.collate([task.encode(tok, ex, model.cfg.max_len) for ex in chunk], tok.pad_id, tok.bos_id, tok.eos_id)
        logits, _ = model(batch["input_ids"].to(model.device), attention_mask=batch["attention_mask"].to(model.device))
        correct += (logits.argmax(-1).cpu() == batch["labels"]).tolist()
    hard = [c for c, ex in zip(correct, examples) if ex.sentence.verbs[ex.verb_index].n_attractors > 0]
    return {
        "accuracy": sum(correct) / len(correct),
        "accuracy_attractor": sum(hard) / max(len(hard), 1),
        "n": len(correct),
        "n_attractor": len(hard),
    }


@torch.inference_mode()
def verb_logprobs(model: TransformerModel, tok: Tokenizer, prefixes: Sequence[str], verbs: Sequence[str]) -> Tensor:
    """log p(verb | [BOS] prefix) for each pair, summed over the verb's subword tokens. Shape (N,)."""
    seqs, spans = [], []
    for prefix, verb in zip(prefixes, verbs):
        p = list(tok.encode(prefix).ids)  # [BOS] prefix tokens
        v = list(tok.encode(verb, add_special_tokens=False).ids)
        if len(p) + len(v) > model.cfg.max_len:  # keep [BOS] and the prefix's end (only tiny test models get here)
            p = p[:1] + p[len(p) + len(v) - model.cfg.max_len + 1 :]
        seqs.append(tuple(p + v))
        spans.append((len(p), len(v)))
    ids = _pad(seqs, tok.pad_id).to(model.device)
    logits, _ = model(ids)
    logp = logits.float().log_softmax(-1)  # (N, T, V)
    out = torch.zeros(len(seqs))
    for i, (start, n) in enumerate(spans):
        # The token at position t is predicted by position t - 1.
        pos = torch.arange(start - 1, start - 1 + n, device=ids.device)
        out[i] = logp[i, pos, ids[i, start : start + n]].sum().cpu()
    return out


def agreement_probe_accuracy(
    model: TransformerModel, tok: Tokenizer, probes: Sequence[AgreementProbe], batch_size: int = 256
) -> dict:
    """Linzen et al. (2016): how often log p(correct verb | prefix) > log p(wrong verb | prefix)."""
    wins: list[bool] = []
    for i in range(0, len(probes), batch_size):
        chunk = probes[i : i + batch_size]
        prefixes = [" ".join(p.prefix) for p in chunk]
        good = verb_logprobs(model, tok, prefixes, [p.correct for p in chunk])
        bad = verb_logprobs(model, tok, prefixes, [p.wrong for p in chunk])
        wins += (good > bad).tolist()
    hard = [w for w, p in zip(wins, probes) if p.n_attractors > 0]
    rc = [w for w, p in zip(wins, probes) if "that" in p.prefix[p.subject_pos + 1 :]]
    return {
        "agreement": sum(wins) / len(wins),
        "agreement_attractor": sum(hard) / max(len(hard), 1),
        "agreement_relative_clause": sum(rc) / max(len(rc), 1),
        "n": len(wins),
        "n_attractor": len(hard),
    }


@torch.inference_mode()
def teacher_forced(model: TransformerModel, task: Task, batch: dict[str, Tensor]) -> dict:
    """Mean loss per prediction and token (or label) accuracy on one padded batch."""
    loss, correct, n = task.loss(model, {k: v.to(model.device) for k, v in batch.items()})
    return {"loss": float(loss) / max(int(n), 1), "accuracy": int(correct) / max(int(n), 1)}


def quality(model: TransformerModel, tok: Tokenizer, task: Task, held_out: Sequence[Any], data_seed: int) -> dict:
    """The task's headline numbers on held-out examples (the ones `python -m transformer.train.evaluate` prints)."""
    from transformer.data import agreement_probes, split_seed

    was_training = model.training
    model.eval()
    try:
        if task.name == "agreement":
            return classifier_accuracy(model, tok, task, held_out)
        batch = task.collate([task.encode(tok, ex, model.cfg.max_len) for ex in held_out], tok.pad_id, tok.bos_id, tok.eos_id)
        forced = teacher_forced(model, task, batch)
        metrics = {"loss": forced["loss"], "token_accuracy": forced["accuracy"]}
        if task.name == "lm":
            probes = agreement_probes(len(held_out), split_seed(data_seed, "probes"))
            return {**metrics, **agreement_probe_accuracy(model, tok, probes)}
        return {**metrics, **exact_match(model, tok, task, held_out)}
    finally:
        model.train(was_training)
