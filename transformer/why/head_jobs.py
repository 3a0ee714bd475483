"""Heads with jobs: one score per layer and head for each job a head can do, on small probe sets.

Every score comes from the model's own attention weights (the traced manual path), averaged or
counted over a seeded probe set. Each `*_scores` function returns a (n_layers, n_heads) tensor
(an encoder-decoder's decoder kinds: its decoder's depth); `head_scores` gathers all that apply to a
checkpoint and `head_labels` names the heads whose score passes a threshold. Layers and heads are
numbered from 0, as in `Trace.head`.

Two families of jobs. Gold-label jobs (agreement, alignment) compare attention with the gold facts
of this project's Toy English corpora, so they are scored only on models trained on those corpora
(`has_gold_labels`). Label-free jobs need no labels and run on any model: previous-token and
first-token for self-attention, and for any translator's cross-attention "monotone" and
"focused", read on the model's own greedy translations of fixed source texts (`cross_probe`).

Word positions. Probe sentences are words joined by single spaces; gold facts (a verb's subject,
a target word's source word) are word indices. A word maps onto the model's tokens through the
tokenizer's character offsets: **a word is represented by its FIRST subword token** (the token
whose offset starts at the word's first character). Special tokens ([CLS], [BOS], ...) never
represent a word.
"""

from __future__ import annotations

import math
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
    model, pad = ckpt.model, ckpt.config.pad_id  # padding is masked: any id of the vocabulary does (imports may lack [PAD])
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


def _probe_examples(ckpt: Checkpoint, n: int, seed: int) -> list[tuple[str, str | None]]:
    """n (source, gold target or None) texts of the checkpoint's own kind: its task's examples, else Toy English sentences.

    A model trained on none of our tasks (an import, an upload) gets plain Toy English sentences with no gold target.
    """
    task = ckpt.training.get("task", "")
    if task in TASKS:
        return TASKS[task](n, seed)
    if task == "translation":
        return [(p.source_text, p.target_text) for p in generate_pairs(n, seed)]
    return [(s.text, s.text if ckpt.config.kind != "encoder-decoder" else None) for s in generate_corpus(n, seed)]


def _self_kind_streams(ckpt: Checkpoint, n: int, seed: int, probe: CrossProbe | None = None) -> list[tuple[str, Trace, Tensor]]:
    """(kind, trace, keep) for every self-attention kind, on the checkpoint's own kind of text.

    An encoder-decoder's decoder reads its forced prefix (`ckpt.decoding.prefix`) and then the gold target when
    the task has one, else the model's own greedy translation: then the texts are `cross_probe`'s (`probe`, if
    the caller has it for the same n and seed).
    """
    tok, cfg = ckpt.tokenizer, ckpt.config
    examples = _probe_examples(ckpt, n, seed)
    srcs = [tok.encode(s, max_len=cfg.max_len).ids for s, _ in examples]
    if cfg.kind != "encoder-decoder":
        trace, keep, _ = _trace(ckpt, srcs)
        return [(cfg.attention_kinds[0], trace, keep)]
    if examples[0][1] is None:
        probe = probe or cross_probe(ckpt, n, seed)
        return [("encoder self", probe.trace, probe.source_keep), ("decoder self", probe.trace, probe.target_keep)]
    prefix = ckpt.decoding.prefix
    room = cfg.max_len - len(prefix)
    tgts = [(*prefix, *tok.encode(t, add_special_tokens=False, max_len=room).ids) for _, t in examples]
    trace, keep, tkeep = _trace(ckpt, srcs, tgts)
    return [("encoder self", trace, keep), ("decoder self", trace, tkeep)]


def _greedy_streams(ckpt: Checkpoint, sources: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """Each source's decoder stream as the app builds it (`api.streams`): the start token, then the greedy translation
    (its first tokens the forced BOS or language token, when the model has one)."""
    from transformer.why.ablation import greedy_batch  # lazily: ablation imports this module

    return [(ckpt.decoding.start, *ids) for ids in greedy_batch(ckpt, sources)]


def _previous_token(streams: list[tuple[str, Trace, Tensor]]) -> dict[str, Tensor]:
    out = {}
    for kind, trace, keep in streams:
        pairs = [(b, t, t - 1) for b in range(keep.shape[0]) for t in range(1, int(keep[b].sum()))]
        out[kind] = _gather(trace, kind, *_pairs(pairs), argmax=False)
    return out


def _first_token(streams: list[tuple[str, Trace, Tensor]]) -> dict[str, Tensor]:
    out = {}
    for kind, trace, keep in streams:
        pairs = [(b, t, 0) for b in range(keep.shape[0]) for t in range(1, int(keep[b].sum()))]
        out[kind] = _gather(trace, kind, *_pairs(pairs), argmax=False)
    return out


def previous_token_scores(ckpt: Checkpoint, n: int = 32, seed: int = PROBE_SEED) -> dict[str, Tensor]:
    """Previous-token score per self-attention kind: mean attention weight from token t to token t-1.

    Averaged over every real query position t >= 1 of n probe texts of the model's own task.
    1.0 means the head always looks exactly one token back.
    """
    return _previous_token(_self_kind_streams(ckpt, n, seed))


def first_token_scores(ckpt: Checkpoint, n: int = 32, seed: int = PROBE_SEED) -> dict[str, Tensor]:
    """First-token ("attention sink") score per self-attention kind: mean weight on token 0.

    Averaged over every real query position t >= 1 (position 0 looking at itself is not counted).
    Token 0 is [CLS] in an encoder and [BOS] in a decoder (an encoder-decoder's: its decoder start);
    a head parks its attention there when it has nothing to do.
    """
    return _first_token(_self_kind_streams(ckpt, n, seed))


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
        trace, _, _ = _trace(ckpt, [st.ids for st in streams], [ckpt.decoding.prefix] * len(streams))
    else:
        trace, _, _ = _trace(ckpt, [st.ids for st in streams])
    return kind, _gather(trace, kind, *_pairs(pairs), argmax=True)


def alignment_scores(ckpt: Checkpoint, n: int = 64, seed: int = PROBE_SEED, include_period: bool = False) -> Tensor:
    """Alignment accuracy of every cross-attention head (translation models).

    Probe: n translation pairs with gold word alignments, the decoder fed the gold target
    (the forced prefix, [BOS] for our translator, + target tokens). For each target word, the query is the decoder
    position that predicts the word's first subword token (the position just before it); the head scores a hit
    when its largest cross-attention weight falls on the first subword token of the word's gold
    source word. Accuracy pooled over all target words of all pairs.

    The sentence-final "." is left out unless `include_period`: the score is about WORDS, and
    the period is punctuation whose "source" is not a word choice but the end of the source,
    which the decoder can read equally at the source "." or at the [EOS] right after it (the
    shipped translator reads it at [EOS]), so a head's choice between the two says nothing about
    alignment. Every target word is still scored, whatever its position.
    """
    tok, cfg = ckpt.tokenizer, ckpt.config
    prefix = ckpt.decoding.prefix
    first = len(prefix) - 1  # target token i sits at decoder position len(prefix) + i: the position before predicts it
    pairs_data = generate_pairs(n, seed)
    srcs, tgts, pairs = [], [], []
    for b, p in enumerate(pairs_data):
        src = tok.encode(p.source_text, max_len=cfg.max_len)
        tgt = tok.encode(p.target_text, add_special_tokens=False, max_len=cfg.max_len - len(prefix))
        s_starts, t_starts = word_starts(src, p.source.words), word_starts(tgt, p.target)
        srcs.append(src.ids)
        tgts.append((*prefix, *tgt.ids))
        pairs += [(b, first + t_starts[t], s_starts[s]) for t, s in p.alignment if include_period or p.target[t] != "."]
    trace, _, _ = _trace(ckpt, srcs, tgts)
    return _gather(trace, "cross", *_pairs(pairs), argmax=True)


# -- label-free jobs of cross-attention heads: any translator -------------------------------------------


def rank_correlation(values: Tensor) -> Tensor:
    """Spearman's ρ between position (0, 1, …, n−1) and `values` (…, n): Pearson's correlation of their ranks.

    Tied values share the mean of their ranks. ρ is 0 where the values are all equal: there is no order to follow.
    """
    v = values.double()
    n = v.shape[-1]
    ranks = (v[..., :, None] > v[..., None, :]).sum(-1) + ((v[..., :, None] == v[..., None, :]).sum(-1) - 1) / 2  # (…, n)
    pos = torch.arange(n, dtype=torch.float64) - (n - 1) / 2  # centred positions
    centred = ranks - ranks.mean(-1, keepdim=True)
    norm = (centred.square().sum(-1) * pos.square().sum()).sqrt()
    return torch.where(norm > 0, (centred * pos).sum(-1) / norm.clamp_min(1e-300), torch.zeros_like(norm))


def monotonicity(weights: Tensor) -> Tensor:
    """(H, Tq, Tk) one text's cross weights (counted queries × real source tokens) -> (H,): ρ(query position, argmax key).

    1: each next target position reads its most-attended source token further right (the translation keeps the
    source's order); −1: further left (it reverses it); 0: no order, or always the same token.
    """
    return rank_correlation(weights.argmax(-1))


def focus(weights: Tensor) -> Tensor:
    """(…, Tk) weight rows over Tk ≥ 2 real keys -> (…): 1 − entropy / ln Tk, 1 for a row on one key, 0 for a uniform row."""
    w = weights.double()
    entropy = -torch.where(w > 0, w * w.log(), torch.zeros_like(w)).sum(-1)
    return 1 - entropy / math.log(w.shape[-1])


@dataclass(frozen=True)
class CrossProbe:
    """A translator's greedy translations of fixed source texts, traced: what the label-free cross-attention jobs read."""

    trace: Trace  # the padded batch, on the CPU
    sources: tuple[tuple[int, ...], ...]  # each text's source ids
    targets: tuple[tuple[int, ...], ...]  # each text's decoder input: the forced prefix, then the greedy translation
    first: int  # the first counted query: len(prefix) − 1, the position that predicts the first free token
    source_keep: Tensor  # (B, Ts) bool, the real source tokens of the padded batch
    target_keep: Tensor  # (B, Tt) bool, the real decoder tokens

    def rows(self, layer: int, b: int) -> Tensor:
        """(H, counted queries, real source tokens): text b's cross weights in decoder layer `layer`."""
        weights = self.trace.attention("cross", layer).weights
        return weights[b, :, self.first : len(self.targets[b]), : len(self.sources[b])]


def cross_probe(ckpt: Checkpoint, n: int = 32, seed: int = PROBE_SEED) -> CrossProbe:
    """n source texts of the model's own kind (`_probe_examples`; fixed Toy English sentences for a model of none of
    our tasks), each decoded greedily as the app decodes it (`ablation.greedy_batch`), then traced in one batch."""
    tok, cfg = ckpt.tokenizer, ckpt.config
    if cfg.kind != "encoder-decoder":
        raise ValueError(f"cross-attention jobs need an encoder-decoder, this model is {cfg.kind}")
    srcs = [tok.encode(s, max_len=cfg.max_len).ids for s, _ in _probe_examples(ckpt, n, seed)]
    tgts = _greedy_streams(ckpt, srcs)
    trace, keep, tkeep = _trace(ckpt, srcs, tgts)
    return CrossProbe(trace, tuple(map(tuple, srcs)), tuple(tgts), len(ckpt.decoding.prefix) - 1, keep, tkeep)


def monotone_scores(probe: CrossProbe) -> Tensor:
    """Monotone score of every cross-attention head, (decoder layers, n_heads), in [−1, 1].

    For each probe text, Spearman's ρ between the counted decoder positions (every position from the one that
    predicts the first free token to the last, which predicts the end) and the source position each one's
    largest weight falls on (`monotonicity`); averaged over the texts with at least two counted positions.
    """
    texts = [b for b, t in enumerate(probe.targets) if len(t) - probe.first >= 2]
    if not texts:
        raise ValueError("no probe translation has two positions to correlate")
    n_layers = probe.trace.n_layers("cross")
    return torch.stack(
        [torch.stack([monotonicity(probe.rows(layer, b)) for b in texts]).mean(0) for layer in range(n_layers)]
    ).float()


def focus_scores(probe: CrossProbe) -> Tensor:
    """Focused score of every cross-attention head, (decoder layers, n_heads), in [0, 1].

    1 − entropy / ln(source tokens) of each counted row (`focus`; the counted rows of `monotone_scores`),
    averaged over every row of every probe text: 1 when each row puts all its weight on one source token.
    """
    n_layers = probe.trace.n_layers("cross")
    rows = [
        torch.cat([focus(probe.rows(layer, b)) for b in range(len(probe.targets))], dim=-1).mean(-1) for layer in range(n_layers)
    ]
    return torch.stack(rows).float()


def has_gold_labels(ckpt: Checkpoint) -> bool:
    """Whether the gold-label jobs apply: the model was trained on one of our Toy English tasks, whose gold facts they read."""
    return ckpt.training.get("task", "") in ("lm", "agreement", "translation")


def missing_gold_labels(ckpt: Checkpoint) -> str | None:
    """One line for a translator the gold-label jobs cannot score (an import): what it gets instead; else None."""
    if ckpt.config.kind != "encoder-decoder" or has_gold_labels(ckpt):
        return None
    return (
        "Alignment and agreement compare attention with the gold labels of this project's Toy English corpora, which "
        "this model was not trained on: its cross-attention heads are scored by label-free jobs instead (monotone, focused)."
    )


def head_scores(ckpt: Checkpoint, n: int = 32) -> dict[str, Tensor]:
    """Every score that applies to the checkpoint, as {"job (kind)": (n_layers, n_heads)}.

    Jobs: previous-token and first-token for each self-attention kind; induction for
    decoder-only models; monotone and focused for any encoder-decoder's cross-attention; and the
    gold-label jobs where our corpora's labels apply (`has_gold_labels`): agreement for models
    trained on Toy English (the lm, the classifier, the translator's encoder), alignment for the
    translator's cross-attention.
    """
    cfg, task = ckpt.config, ckpt.training.get("task", "")
    out: dict[str, Tensor] = {}
    probe = cross_probe(ckpt, n) if cfg.kind == "encoder-decoder" else None
    streams = _self_kind_streams(ckpt, n, PROBE_SEED, probe)  # the probe's own trace when there is no gold target
    for kind, t in _previous_token(streams).items():
        out[f"previous-token ({kind})"] = t
    for kind, t in _first_token(streams).items():
        out[f"first-token ({kind})"] = t
    if cfg.kind == "decoder":
        out["induction (decoder self)"] = induction_scores(ckpt, n=max(n // 2, 4))
    if probe is not None:
        out["monotone (cross)"] = monotone_scores(probe)
        out["focused (cross)"] = focus_scores(probe)
    if has_gold_labels(ckpt):
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


# What each job means, in one line a newcomer can read under the heatmap.
JOB_MEANINGS = {
    "alignment": "each word of the translation looks at the source word it translates",
    "agreement": "the verb looks back at its own subject, across the words between them",
    "induction": "a token looks at whatever followed an earlier copy of itself, to predict it again",
    "monotone": "the translation reads the source in order, from left to right",
    "previous-token": "each token looks at the token just before it",
    "focused": "each word of the translation looks at one source token, not a spread of them",
    "first-token": "most of the weight parks on the first token (an attention sink, a place to put attention not needed)",
}
# The jobs a first screen should show, most telling first: the gold-label jobs (they check what the head is for), then
# the jobs seen from the weights alone; a sink is shown only when a model has nothing else.
TELLING_ORDER = ("alignment", "agreement", "induction", "monotone", "previous-token", "focused", "first-token")


def most_telling(scores: dict[str, Tensor], threshold: float = 0.5) -> HeadLabel | None:
    """The head a first screen opens on: the best-scoring head of the first job in `TELLING_ORDER` that some head
    does at `threshold` or above (ties: the earliest layer, then head); None when no head does any job."""
    labels = head_labels(scores, threshold)
    for job in TELLING_ORDER:
        done = [h for h in labels if h.job == job]
        if done:
            return min(done, key=lambda h: (-h.score, h.layer, h.head))
    return None


def tour(scores: dict[str, Tensor], kinds: tuple[str, ...], threshold: float = 0.5) -> list[tuple[str, int, int]]:
    """Every (kind, layer, head) with some job at `threshold` or above, in the model's order: kind as in `kinds`,
    then layer, then head (an autoplay tour of the heads with a job)."""
    heads = {(h.kind, h.layer, h.head) for h in head_labels(scores, threshold)}
    return sorted(heads, key=lambda h: (kinds.index(h[0]) if h[0] in kinds else len(kinds), h[1], h[2]))
