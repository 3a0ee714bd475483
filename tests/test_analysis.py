"""Head-job scores: the batched scores equal one-sentence-at-a-time references, and the shipped models have heads with jobs.

The batched scores and the references compute the same weights in two ways (a padded batch, one
text at a time), so they agree within float32 rounding (`numerics`), not bit for bit: a mean of
weights within that rounding, an argmax only where the largest weight wins by more than it.
"""

from __future__ import annotations

import math

import pytest
import torch
from numerics import assert_close, longest_sum, rounding_atol, sublayers

from transformer import Checkpoint, ModelConfig, api, load_checkpoint, train_tokenizer
from transformer.checkpoints.catalog import assets_dir
from transformer.data import generate_corpus, generate_pairs, induction_sequences
from transformer.why.head_jobs import (
    PROBE_SEED,
    agreement_scores,
    alignment_scores,
    cross_probe,
    first_token_scores,
    focus,
    focus_scores,
    head_labels,
    head_scores,
    induction_scores,
    missing_gold_labels,
    monotone_scores,
    monotonicity,
    previous_token_scores,
    rank_correlation,
    relative_clause_sentences,
    single_token_words,
    word_starts,
)

pytestmark = pytest.mark.numerics


@pytest.fixture(scope="module")
def texts():
    pairs = generate_pairs(300, 5)
    return [p.source_text for p in pairs] + [p.target_text for p in pairs]


def make(kind: str, texts, task: str, vocab: int = 150, sharpen: float = 1.0) -> Checkpoint:
    """A random (untrained) model with a small tokenizer, so that many words split into subwords.

    `sharpen` scales W_Q and W_K: a fresh model's attention is so near uniform that its largest
    weight often wins by 1e-7 to 1e-6, within rounding, and an argmax there says nothing.
    """
    tok = train_tokenizer(texts, kind, vocab)
    cfg = ModelConfig(kind=kind, vocab_size=tok.vocab_size, n_layers=2, n_heads=2, d_model=16, d_ff=32, max_len=96)
    model = api.build_model(cfg, seed=3).eval().requires_grad_(False)
    for name, p in model.named_parameters():
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            p.mul_(sharpen)
    return Checkpoint(model=model, tokenizer=tok, training={"task": task})


def rounding(ckpt: Checkpoint, traces) -> dict:
    """`assert_close`'s terms, depth and magnitude for an attention weight computed two ways, on these texts.

    The longest sum is d_ff, d_model or a row over the keys; every sublayer of every layer stacks its
    rounding; a weight moves with its scores, whose terms add up to Σ|q_i k_i|/√d_head.
    """
    cfg = ckpt.config
    attentions = [t.attention(kind, layer) for t in traces for kind in t.kinds for layer in range(cfg.n_layers)]
    length = max(a.weights.shape[-1] for a in attentions)
    scale = max(float((a.q.abs() @ a.k.abs().transpose(-2, -1)).max()) / math.sqrt(cfg.d_head) for a in attentions)
    return dict(terms=longest_sum(cfg, length), depth=sublayers(cfg), magnitude=max(1.0, scale))


def argmax_hits(rows, gold: int, atol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(certain, possible) hits per head of `rows` (H, Tk): the largest weight on key `gold`, for any rounding ≤ atol.

    Keys within 2·atol of the largest may come out on top in the other computation: a row with more
    than one is a hit for certain only if none; possibly, if `gold` is one of them.
    """
    near = rows >= rows.max(-1, keepdim=True).values - 2 * atol
    return ((near.sum(-1) == 1) & (rows.argmax(-1) == gold)).float(), near[:, gold].float()


def assert_hits(got: torch.Tensor, n: int, certain: torch.Tensor, possible: torch.Tensor, why: str) -> None:
    """The batched fraction of hits `got` counts every certain hit and no impossible one; few rows are left open."""
    hits = torch.round(got * n)
    assert torch.equal(got, hits / n), f"{why}: {got} is not a count of hits out of {n}"
    assert bool(((certain <= hits) & (hits <= possible)).all()), (
        f"{why}: batched hits {hits.tolist()} outside the reference's {certain.tolist()} .. {possible.tolist()} "
        "(argmaxes within float32 rounding of a tie counted either way)"
    )
    assert float((possible - certain).sum()) <= certain.numel() * n / 4, f"{why}: most argmaxes within rounding of a tie"


def test_word_starts_points_at_each_words_first_subword(texts):
    ckpt = make("encoder", texts, "agreement", vocab=80)
    words = "the grumpy scientists that the queen remembers whistle .".split()
    stream = ckpt.tokenizer.encode(" ".join(words))
    starts = word_starts(stream, words)
    assert stream.tokens[0] == "[CLS]" and starts[0] == 1  # specials never stand for a word
    assert len(stream.tokens) > len(words) + 2  # some words really are split
    for i, w in enumerate(words):
        end = starts[i + 1] if i + 1 < len(words) else len(stream.tokens) - 1
        pieces = stream.tokens[starts[i] : end]
        assert "".join(p.removeprefix("##") for p in pieces) == w and not pieces[0].startswith("##")
    with pytest.raises(ValueError):
        word_starts(stream, ["thegrumpy", *words[1:]])


def test_uniform_attention_gives_the_analytic_scores(texts):
    # Zero queries -> all scores 0 -> causal weights 1/(t+1): both scores are the mean of 1/(t+1).
    ckpt = make("decoder", texts, "lm")
    for layer in ckpt.model.decoder.layers:
        layer.self_attn.q_proj.weight.zero_()
        layer.self_attn.q_proj.bias.zero_()
    lengths = [len(ckpt.tokenizer.encode(s.text).ids) for s in generate_corpus(8, PROBE_SEED)]
    want = sum(1 / (t + 1) for T in lengths for t in range(1, T)) / sum(T - 1 for T in lengths)
    prev = previous_token_scores(ckpt, n=8)["decoder self"]
    sink = first_token_scores(ckpt, n=8)["decoder self"]
    assert prev.shape == sink.shape == (2, 2)
    # Scores of exactly 0 make every weight 1/(t+1), rounded to float32: the means differ from the exact
    # value by that rounding and the rounding of a sum of Σ(T - 1) such terms.
    count = sum(T - 1 for T in lengths)
    assert_close(prev, torch.full((2, 2), want), terms=count, why="mean previous-token weight against the analytic value")
    assert_close(sink, prev, terms=count, why="mean first-token weight against the mean previous-token weight (both 1/(t+1))")


def one(ckpt, text, target=None):
    return api.trace_text(ckpt, text, target=target)


def test_previous_and_first_token_scores_match_a_per_sentence_reference(texts):
    ckpt = make("encoder", texts, "agreement")
    sums, count, traces = torch.zeros(2, 2, 2), 0, []  # (score, layer, head)
    for s in generate_corpus(6, PROBE_SEED):
        trace = one(ckpt, s.text)
        traces.append(trace)
        for layer in range(2):
            w = trace.attention("encoder self", layer).weights[0]  # (H, T, T)
            T = w.shape[-1]
            sums[0, layer] += sum(w[:, t, t - 1] for t in range(1, T))
            sums[1, layer] += sum(w[:, t, 0] for t in range(1, T))
        count += T - 1
    r = rounding(ckpt, traces)  # each weight within rounding, then a sum of `count` of them
    r.update(terms=max(r["terms"], count), depth=r["depth"] + 1)
    why = "the mean weight over a padded batch against one sentence at a time"
    assert_close(previous_token_scores(ckpt, n=6)["encoder self"], sums[0] / count, **r, why=f"previous-token: {why}")
    assert_close(first_token_scores(ckpt, n=6)["encoder self"], sums[1] / count, **r, why=f"first-token: {why}")


def test_induction_score_matches_a_per_sequence_reference(texts):
    ckpt = make("decoder", texts, "lm", vocab=400)
    L = 6
    seqs = induction_sequences(4, PROBE_SEED, single_token_words(ckpt), L)
    ref, traces = torch.zeros(2, 2), []
    for seq in seqs:
        trace = one(ckpt, " ".join(seq))
        traces.append(trace)
        assert len(trace.source.ids) == 2 * L + 1  # [BOS] + two copies of single-token words
        for layer in range(2):
            w = trace.attention("decoder self", layer).weights[0]
            ref[layer] += sum(w[:, L + i, i + 1] for i in range(1, L + 1))
    got = induction_scores(ckpt, n=4, length=L)
    r = rounding(ckpt, traces)  # each weight within rounding, then a sum of 4·L of them
    r.update(terms=max(r["terms"], 4 * L), depth=r["depth"] + 1)
    assert_close(got, ref / (4 * L), **r, why="the mean induction weight over a batch against one sequence at a time")


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_agreement_score_matches_a_per_sentence_reference(texts, kind):
    ckpt = make(kind, texts, "agreement" if kind == "encoder" else "lm", sharpen=16)
    sentences = relative_clause_sentences(10)
    rows = []  # (trace, query, gold key)
    for s in sentences:
        fact = s.verbs[s.main_verb_index]
        assert "that" in s.words[fact.subject_pos + 1 : fact.verb_pos]
        trace = one(ckpt, s.text)
        starts = word_starts(trace.source, s.words)
        rows.append((trace, starts[fact.verb_pos] - (kind == "decoder"), starts[fact.subject_pos]))
    atol = rounding_atol(**rounding(ckpt, [trace for trace, _, _ in rows]))
    certain, possible = torch.zeros(2, 2), torch.zeros(2, 2)
    for trace, query, gold in rows:
        for layer in range(2):
            sure, maybe = argmax_hits(trace.attention(f"{kind} self", layer).weights[0][:, query], gold, atol)
            certain[layer] += sure
            possible[layer] += maybe
    got_kind, got = agreement_scores(ckpt, n=10)
    assert got_kind == f"{kind} self"
    assert_hits(got, 10, certain, possible, "agreement: argmax over a padded batch against one sentence at a time")


@pytest.mark.parametrize("include_period", [False, True])
def test_alignment_score_matches_a_per_pair_reference(texts, include_period):
    ckpt = make("encoder-decoder", texts, "translation", sharpen=16)
    rows = []  # (trace, query, gold key)
    for p in generate_pairs(8, PROBE_SEED):
        trace = one(ckpt, p.source_text, target=p.target_text)
        src_starts = word_starts(trace.source, p.source.words)
        tgt = ckpt.tokenizer.encode(p.target_text, add_special_tokens=False)
        tgt_starts = word_starts(tgt, p.target)
        rows += [(trace, tgt_starts[t], src_starts[s]) for t, s in p.alignment if include_period or p.target[t] != "."]
    atol = rounding_atol(**rounding(ckpt, [trace for trace, _, _ in rows]))
    certain, possible = torch.zeros(2, 2), torch.zeros(2, 2)
    for trace, query, gold in rows:
        for layer in range(2):
            w = trace.attention("cross", layer).weights[0]  # (H, Tt, Ts); row j predicts target token j
            sure, maybe = argmax_hits(w[:, query], gold, atol)
            certain[layer] += sure
            possible[layer] += maybe
    got = alignment_scores(ckpt, n=8, include_period=include_period)
    assert_hits(got, len(rows), certain, possible, "alignment: argmax over a padded batch against one pair at a time")


def test_head_scores_keys_and_head_labels():
    ckpt = make("encoder-decoder", generate_pairs(1, 0)[0].source.words, "translation", vocab=60)
    scores = head_scores(ckpt, n=4)
    assert set(scores) == {
        "previous-token (encoder self)",
        "previous-token (decoder self)",
        "first-token (encoder self)",
        "first-token (decoder self)",
        "agreement (encoder self)",
        "alignment (cross)",
        "monotone (cross)",
        "focused (cross)",
    }
    assert all(t.shape == (2, 2) for t in scores.values())
    assert missing_gold_labels(ckpt) is None
    fake = {"induction (decoder self)": torch.tensor([[0.1, 0.9], [0.6, 0.2]]), "alignment (cross)": torch.tensor([[0.95, 0.0]])}
    labels = head_labels(fake, threshold=0.5)
    assert [str(h) for h in labels] == [
        "cross L0 H0: alignment 0.95",
        "decoder self L0 H1: induction 0.90",
        "decoder self L1 H0: induction 0.60",
    ]
    assert labels[1].kind == "decoder self" and (labels[1].layer, labels[1].head, labels[1].job) == (0, 1, "induction")


# ---- label-free jobs of cross-attention heads -----------------------------------------------------


def test_rank_correlation_against_hand_computed_values():
    values = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0], [2, 2, 2, 2], [0, 2, 1, 3], [0, 0, 1, 1]])
    # 1 − 6 Σd² / (n(n² − 1)) for distinct ranks (d: rank − position): 1 − 6·2/60 = 0.8 for [0, 2, 1, 3]. With ties,
    # [0, 0, 1, 1] has mean ranks [½, ½, 2½, 2½]: centred (−1, −1, 1, 1) against (−1½, −½, ½, 1½), 4 / √(4·5) = 2/√5.
    want = torch.tensor([1.0, -1.0, 0.0, 0.8, 2 / math.sqrt(5)], dtype=torch.float64)
    assert_close(rank_correlation(values), want, terms=4, why="Spearman's ρ against its value by hand")


def test_monotonicity_and_focus_of_constructed_weights():
    peaks = torch.tensor([[0, 1, 2, 4], [4, 3, 1, 0], [2, 2, 2, 2]])  # (H, Tq): where each head's row peaks
    weights = torch.nn.functional.one_hot(peaks, 5).float().mul(4).softmax(-1)  # (3, 4, 5), every row peaked there
    assert monotonicity(weights).tolist() == [1.0, -1.0, 0.0]  # in order, reversed, always the same source token
    rows = torch.tensor([[1.0, 0, 0, 0], [0.25] * 4, [0.5, 0.5, 0, 0], [0.25, 0.25, 0.5, 0]])
    # 1 − H/ln 4: H = 0, ln 4, ln 2, and ½ ln 4 + ½ ln 2 = 1½ ln 2.
    assert_close(focus(rows), torch.tensor([1.0, 0.0, 0.5, 0.25]), terms=4, why="1 − entropy / ln Tk against its value by hand")


def naive_spearman(values: list[int]) -> float:
    """Spearman's ρ between position and `values` as a textbook writes it: mean ranks for ties, then Pearson's r."""
    n = len(values)
    ranks = [sum(v < x for v in values) + (sum(v == x for v in values) - 1) / 2 for x in values]
    mr, mp = sum(ranks) / n, (n - 1) / 2
    cov = sum((r - mr) * (i - mp) for i, r in enumerate(ranks))
    var = sum((r - mr) ** 2 for r in ranks) * sum((i - mp) ** 2 for i in range(n))
    return cov / math.sqrt(var) if var > 0 else 0.0


def test_monotone_and_focused_match_the_translators_own_traces_one_text_at_a_time():
    """On the shipped translator: the probe's greedy translations are api.trace_text's, and both scores equal the
    textbook formulas applied to trace_text's cross weights of each text alone."""
    ckpt = shipped("translator")
    n = 8
    probe = cross_probe(ckpt, n=n)
    texts = [p.source_text for p in generate_pairs(n, PROBE_SEED)]
    first = len(ckpt.decoding.prefix) - 1
    L, H = ckpt.config.layers_of("cross"), ckpt.config.n_heads
    rho, counted, ent, rows = torch.zeros(L, H, dtype=torch.float64), 0, torch.zeros(L, H, dtype=torch.float64), 0
    traces = []
    for b, text in enumerate(texts):
        trace = one(ckpt, text)
        traces.append(trace)
        assert trace.target.ids == probe.targets[b] and trace.source.ids == probe.sources[b]  # api's greedy, batched
        T = len(trace.target.ids) - first
        rows += T
        counted += T >= 2
        for layer in range(L):
            w = trace.attention("cross", layer).weights[0, :, first:].double()  # (H, T, S)
            top2 = w.topk(2, dim=-1).values
            assert float((top2[..., 0] - top2[..., 1]).min()) > 1e-4, "an argmax within rounding of a tie says nothing"
            for h in range(H):
                if T >= 2:
                    rho[layer, h] += naive_spearman(w[h].argmax(-1).tolist())
                p = w[h]
                ent[layer, h] += float((1 - (-(p * p.clamp_min(1e-300).log()).sum(-1)) / math.log(w.shape[-1])).sum())
    r = rounding(ckpt, traces)
    assert_close(monotone_scores(probe), rho / counted, terms=n, why="mean ρ over a padded batch against one text at a time")
    r.update(terms=max(r["terms"], rows), depth=r["depth"] + 1)
    assert_close(focus_scores(probe), ent / rows, **r, why="mean 1 − H/ln S over a padded batch against one text at a time")


# ---- the shipped checkpoints -------------------------------------------------------------------


def shipped(name):
    path = assets_dir() / f"{name}.safetensors"  # $ATTNVIZ_ASSETS checks a fresh `make checkpoints` run
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make checkpoints`")
    return load_checkpoint(path, device="cpu")


def test_lm_has_an_induction_head():
    scores = induction_scores(shipped("lm"))
    assert scores.max() >= 0.5, scores


def test_translator_has_an_aligning_cross_attention_head():
    scores = alignment_scores(shipped("translator"), n=100)
    assert scores.max() >= 0.9, scores


def test_lm_or_classifier_has_a_head_that_finds_the_subject_across_a_relative_clause():
    best = {name: agreement_scores(shipped(name), n=100)[1].max().item() for name in ("lm", "classifier")}
    assert max(best.values()) >= 0.7, best


@pytest.mark.parametrize("name", ["translator", "lm", "classifier", "reverse"])
def test_head_scores_are_in_range(name):
    # Their speed (under 2 s, for the Attention page's table) is a benchmark figure, not a timed test: CI machines are noisy.
    scores = head_scores(shipped(name))
    for job, t in scores.items():
        low = -1 if job.startswith("monotone") else 0  # a rank correlation; every other score is a weight or a fraction
        assert bool(((t >= low) & (t <= 1)).all()), job


def test_copy_positions_are_where_a_pair_repeats():
    from transformer.why.head_jobs import copy_positions

    #        0  1  2  3  4  5  6
    ids = [9, 1, 2, 3, 1, 2, 3]  # "1 2 3" again: after 1 (pos 4) comes 2, after 2 (pos 5) comes 3
    assert copy_positions(ids) == (4, 5)
    assert copy_positions([1, 1, 1]) == (1,)  # (1, 1) at 0, again at 1
    assert copy_positions([]) == () and copy_positions([5]) == ()
