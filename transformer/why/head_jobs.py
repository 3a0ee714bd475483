"""Heads with jobs: one score per layer and head for each job a head can do, on small probe sets.

Every score comes from the model's own attention weights (the traced manual path), averaged or
counted over a seeded probe set. Each `*_scores` function returns a (n_layers, n_heads) tensor;
`head_scores` gathers all that apply to a checkpoint and `head_labels` names the heads whose
score passes a threshold. Layers and heads are numbered from 0, as in `Trace.head`.

Word positions. Probe sentences are words joined by single spaces; gold facts (a verb's subject,
a target word's source word) are word indices. A word maps onto the model's tokens through the
tokenizer's character offsets: **a word is represented by its FIRST subword token** (the token
whose offset starts at the word's first character). Special tokens ([CLS], [BOS], ...) never
represent a word.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from transformer.checkpoints.format import Checkpoint
from transformer.data import TASKS, VOCABULARY, generate_corpus, generate_pairs, generate_sentence, induction_sequences
from transformer.data.toy_english import RELATIVIZER, Sentence
from transformer.model.trace import Stream, Trace

PROBE_SEED = 1234  # probe sets are fixed, so scores are comparable across checkpoints and snapshots


def copy_positions(ids: Sequence[int]) -> tuple[int, ...]:
    """Positions t whose next token can be copied: the pair (ids[t], ids[t + 1]) already occurred earlier in the text.

    What an induction head does ("A B … A → B"): at these positions a model that copies predicts the
    next token right. The Ablation page's sweep can count only them.
    """
    seen: set[tuple[int, int]] = set()
    out = []
    for t in range(len(ids) - 1):
        pair = (ids[t], ids[t + 1])
        if pair in seen:
            out.append(t)
        seen.add(pair)
    return tuple(out)


def word_starts(stream: Stream, words: Sequence[str]) -> list[int]:
    """Index in `stream.tokens` of each word's first subword token (words joined by single spaces).

    Raises ValueError if a word has no token starting at its first character (e.g. it was
    truncated away, or the text is not `" ".join(words)`).
    """
    starts = {}
    for i, (a, b) in enumerate(stream.offsets):
        if b > a and a not in starts:  # specials have empty (0, 0) offsets
            starts[a] = i
    out, char = [], 0
    for w in words:
        if char not in starts:
            raise ValueError(f"no token starts at word {w!r} (character {char}) in {stream.text!r}")
        out.append(starts[char])
        char += len(w) + 1
    return out


def pad_batch(seqs: Sequence[Sequence[int]], value: int) -> tuple[Tensor, Tensor]:
    """(B, T) ids right-padded with `value`, and (B, T) bool of real tokens."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
    keep = torch.zeros(len(seqs), T, dtype=torch.bool)
    for i, s in enumerate(seqs):
        keep[i, : len(s)] = True
    return ids, keep


@torch.inference_mode()
def _trace(
    ckpt: Checkpoint, sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]] | None = None
) -> tuple[Trace, Tensor, Tensor | None]:
    """Trace a padded batch; returns (trace on CPU, source keep (B, Ts), target keep (B, Tt) or None)."""
    model, pad = ckpt.model, ckpt.tokenizer.pad_id
    dev = model.device
    src, keep = pad_batch(sources, pad)
    if targets is None:
        _, trace = model(src.to(dev), attention_mask=keep.to(dev), trace=True)
        tkeep = None
    else:
        tgt, tkeep = pad_batch(targets, pad)
        _, trace = model(src.to(dev), tgt.to(dev), attention_mask=keep.to(dev), decoder_attention_mask=tkeep.to(dev), trace=True)
    return trace.map_tensors(lambda t: t.detach().cpu()), keep, tkeep


def _gather(trace: Trace, kind: str, b: Tensor, q: Tensor, k: Tensor, argmax: bool) -> Tensor:
    """(n_layers, n_heads): mean over pairs of weight[b, h, q, k], or of [argmax_k' weight[b, h, q, k'] == k]."""
    rows = []
    for layer in range(trace.n_layers(kind)):
        w = trace.attention(kind, layer).weights  # (B, H, Tq, Tk)
        if argmax:
            rows.append((w.argmax(-1)[b, :, q] == k[:, None]).float().mean(0))  # (H,)
        else:
            rows.append(w[b, :, q, k].mean(0))  # (H,)
    return torch.stack(rows)  # (L, H)


def _pairs(pairs: list[tuple[int, int, int]]) -> tuple[Tensor, Tensor, Tensor]:
    b, q, k = zip(*pairs)
    return torch.tensor(b), torch.tensor(q), torch.tensor(k)


def _self_kind_streams(ckpt: Checkpoint, n: int, seed: int) -> list[tuple[str, Trace, Tensor]]:
    """(kind, trace, keep) for every self-attention kind, on the checkpoint's own kind of text."""
    tok, cfg = ckpt.tokenizer, ckpt.config
    task = ckpt.training.get("task", "")
    if task in TASKS:
        examples = TASKS[task](n, seed)
    elif task == "translation":
        examples = [(p.source_text, p.target_text) for p in generate_pairs(n, seed)]
    else:
        examples = [(s.text, s.text) for s in generate_corpus(n, seed)]
    srcs = [tok.encode(s, max_len=cfg.max_len).ids for s, _ in examples]
    if cfg.kind != "encoder-decoder":
        trace, keep, _ = _trace(ckpt, srcs)
        return [(cfg.attention_kinds[0], trace, keep)]
    tgts = [(tok.bos_id, *tok.encode(t, add_special_tokens=False, max_len=cfg.max_len - 1).ids) for _, t in examples]
    trace, keep, tkeep = _trace(ckpt, srcs, tgts)
    return [("encoder self", trace, keep), ("decoder self", trace, tkeep)]


def previous_token_scores(ckpt: Checkpoint, n: int = 32, seed: int = PROBE_SEED) -> dict[str, Tensor]:
    """Previous-token score per self-attention kind: mean attention weight from token t to token t-1.

    Averaged over every real query position t >= 1 of n probe texts of the model's own task.
    1.0 means the head always looks exactly one token back.
    """
    out = {}
    for kind, trace, keep in _self_kind_streams(ckpt, n, seed):
        pairs = [(b, t, t - 1) for b in range(keep.shape[0]) for t in range(1, int(keep[b].sum()))]
        out[kind] = _gather(trace, kind, *_pairs(pairs), argmax=False)
    return out


def first_token_scores(ckpt: Checkpoint, n: int = 32, seed: int = PROBE_SEED) -> dict[str, Tensor]:
    """First-token ("attention sink") score per self-attention kind: mean weight on token 0.

    Averaged over every real query position t >= 1 (position 0 looking at itself is not counted).
    Token 0 is [CLS] in an encoder and [BOS] in a decoder; a head parks its attention there when
    it has nothing to do.
    """
    out = {}
    for kind, trace, keep in _self_kind_streams(ckpt, n, seed):
        pairs = [(b, t, 0) for b in range(keep.shape[0]) for t in range(1, int(keep[b].sum()))]
        out[kind] = _gather(trace, kind, *_pairs(pairs), argmax=False)
    return out


def single_token_words(ckpt: Checkpoint) -> list[str]:
    """Toy English words that the tokenizer keeps as one token (probe material for induction)."""
    tok = ckpt.tokenizer
    return [w for w in VOCABULARY if w != "." and len(tok.encode(w, add_special_tokens=False).ids) == 1]


def induction_scores(ckpt: Checkpoint, n: int = 16, length: int = 20, seed: int = PROBE_SEED) -> Tensor:
    """Induction score of every decoder self-attention head (decoder-only models).

    Probe: [BOS] r_1 .. r_L r_1 .. r_L, with r a random sequence of L distinct single-token words
    (`induction_sequences`), so the text is unpredictable except by copying. For every query in
    the second half, at position L + i holding r_i (i = 1..L), the score is the attention weight
    on position i + 1: the token that FOLLOWED r_i's first occurrence. Averaged over queries and
    n sequences; an induction head ("A B ... A -> look at B") scores near 1.
    """
    tok = ckpt.tokenizer
    words = single_token_words(ckpt)
    seqs = induction_sequences(n, seed, words, length)
    ids = [tok.encode(" ".join(s)).ids for s in seqs]  # [BOS] + 2L tokens
    trace, _, _ = _trace(ckpt, ids)
    pairs = [(b, length + i, i + 1) for b in range(len(ids)) for i in range(1, length + 1)]
    return _gather(trace, "decoder self", *_pairs(pairs), argmax=False)


def relative_clause_sentences(n: int, seed: int = PROBE_SEED) -> list[Sentence]:
    """n Toy English sentences whose main verb is separated from its subject by a relative clause."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        s = generate_sentence(rng, p_relative=0.7)
        fact = s.verbs[s.main_verb_index]
        if RELATIVIZER in s.words[fact.subject_pos + 1 : fact.verb_pos]:
            out.append(s)
    return out


def agreement_scores(ckpt: Checkpoint, n: int = 64, seed: int = PROBE_SEED) -> tuple[str, Tensor]:
    """Agreement score: how often a head's attention argmax lands on the verb's gold subject.

    Probe: n grammatical sentences in which a relative clause separates the main verb from its
    subject ("the dogs that the cat sees run ."). The query is where the model must decide the
    verb's number: the verb itself in an encoder (classifier, translator's encoder), the position
    just before the verb in a decoder (it predicts the verb). The score is the fraction of
    sentences in which the head's largest weight from that query falls on the subject's head noun
    (its first subword token). Returns (attention kind, (n_layers, n_heads) scores).
    """
    tok, cfg = ckpt.tokenizer, ckpt.config
    kind = "encoder self" if cfg.has_encoder else "decoder self"
    sentences = relative_clause_sentences(n, seed)
    streams = [tok.encode(s.text, max_len=cfg.max_len) for s in sentences]
    pairs = []
    for b, (s, stream) in enumerate(zip(sentences, streams)):
        fact = s.verbs[s.main_verb_index]
        starts = word_starts(stream, s.words)
        query = starts[fact.verb_pos] - (0 if cfg.has_encoder else 1)
        pairs.append((b, query, starts[fact.subject_pos]))
    if cfg.kind == "encoder-decoder":
        # Only the encoder is scored; the decoder just needs some target to run.
        trace, _, _ = _trace(ckpt, [st.ids for st in streams], [(tok.bos_id,)] * len(streams))
    else:
        trace, _, _ = _trace(ckpt, [st.ids for st in streams])
    return kind, _gather(trace, kind, *_pairs(pairs), argmax=True)


def alignment_scores(ckpt: Checkpoint, n: int = 64, seed: int = PROBE_SEED, include_period: bool = False) -> Tensor:
    """Alignment accuracy of every cross-attention head (translation models).

    Probe: n translation pairs with gold word alignments, the decoder fed the gold target
    ([BOS] + target tokens). For each target word, the query is the decoder position that
    predicts the word's first subword token (the position just before it); the head scores a hit
    when its largest cross-attention weight falls on the first subword token of the word's gold
    source word. Accuracy pooled over all target words of all pairs.

    The sentence-final "." is left out unless `include_period`: the score is about WORDS, and
    the period is punctuation whose "source" is not a word choice but the end of the source,
    which the decoder can read equally at the source "." or at the [EOS] right after it (the
    shipped translator reads it at [EOS]), so a head's choice between the two says nothing about
    alignment. Every target word is still scored, whatever its position.
    """
    tok, cfg = ckpt.tokenizer, ckpt.config
    pairs_data = generate_pairs(n, seed)
    srcs, tgts, pairs = [], [], []
    for b, p in enumerate(pairs_data):
        src = tok.encode(p.source_text, max_len=cfg.max_len)
        tgt = tok.encode(p.target_text, add_special_tokens=False, max_len=cfg.max_len - 1)
        s_starts, t_starts = word_starts(src, p.source.words), word_starts(tgt, p.target)
        srcs.append(src.ids)
        tgts.append((tok.bos_id, *tgt.ids))
        # Decoder input position j holds target token j-1 and predicts target token j.
        pairs += [(b, t_starts[t], s_starts[s]) for t, s in p.alignment if include_period or p.target[t] != "."]
    trace, _, _ = _trace(ckpt, srcs, tgts)
    return _gather(trace, "cross", *_pairs(pairs), argmax=True)


def head_scores(ckpt: Checkpoint, n: int = 32) -> dict[str, Tensor]:
    """Every score that applies to the checkpoint, as {"job (kind)": (n_layers, n_heads)}.

    Jobs: previous-token and first-token for each self-attention kind; induction for
    decoder-only models; agreement for models trained on Toy English (the lm, the classifier,
    the translator's encoder); alignment for the translator's cross-attention.
    """
    cfg, task = ckpt.config, ckpt.training.get("task", "")
    out: dict[str, Tensor] = {}
    for kind, t in previous_token_scores(ckpt, n).items():
        out[f"previous-token ({kind})"] = t
    for kind, t in first_token_scores(ckpt, n).items():
        out[f"first-token ({kind})"] = t
    if cfg.kind == "decoder":
        out["induction (decoder self)"] = induction_scores(ckpt, n=max(n // 2, 4))
    if task in ("lm", "agreement", "translation"):
        kind, t = agreement_scores(ckpt, n=2 * n)
        out[f"agreement ({kind})"] = t
    if task == "translation":
        out["alignment (cross)"] = alignment_scores(ckpt, n=2 * n)
    return out


@dataclass(frozen=True)
class HeadLabel:
    """One head with one job, e.g. `cross L1 H3: alignment 0.93` (layers and heads from 0)."""

    kind: str
    layer: int
    head: int
    job: str
    score: float

    def __str__(self) -> str:
        return f"{self.kind} L{self.layer} H{self.head}: {self.job} {self.score:.2f}"


def head_labels(scores: dict[str, Tensor], threshold: float = 0.5) -> list[HeadLabel]:
    """Heads whose score for a job reaches `threshold`, best first."""
    labels = []
    for key, table in scores.items():
        job, kind = key[: key.index(" (")], key[key.index(" (") + 2 : -1]
        for layer, head in (table >= threshold).nonzero().tolist():
            labels.append(HeadLabel(kind, layer, head, job, float(table[layer, head])))
    return sorted(labels, key=lambda h: -h.score)
