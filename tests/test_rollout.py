"""Attention rollout and flow: equal to naive references written from the paper, bounded as the paper says."""

from __future__ import annotations

import networkx as nx
import pytest
import torch
from numerics import assert_close

from transformer import load_checkpoint, trace_text
from transformer.checkpoints.catalog import assets_dir
from transformer.why.rollout import (
    FLOW_MAX_STEPS,
    FLOW_MAX_TOKENS,
    FLOW_MAX_TOKENS_SHALLOW,
    FlowTooLong,
    add_residual,
    attention_flow,
    cross_flow,
    cross_rollout,
    flow_max_tokens,
    flow_trace,
    max_flows,
    reduce_heads,
    rollout,
    rollout_trace,
)

pytestmark = pytest.mark.numerics


def random_weights(L: int, H: int, T: int, causal: bool = False, seed: int = 0, n_keys: int | None = None) -> torch.Tensor:
    """(L, H, T, n_keys) softmax weights, rows summing to 1; lower-triangular when causal."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(L, H, T, n_keys or T, generator=g, dtype=torch.float64) * 2
    if causal:
        scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    return scores.softmax(-1)


# --- naive references: plain Python lists and loops, written from the paper's formulas ---------------


def naive_augmented(w: torch.Tensor) -> list[list[float]]:
    """One layer (H, T, T): mean over heads, 0.5·A + 0.5·I, rows renormalised."""
    H, T, _ = w.shape
    rows = []
    for i in range(T):
        row = [sum(float(w[h, i, j]) for h in range(H)) / H for j in range(T)]
        row = [0.5 * a + (0.5 if i == j else 0.0) for j, a in enumerate(row)]
        rows.append([a / sum(row) for a in row])
    return rows


def matmul(a: list[list[float]], b: list[list[float]]) -> list[list[float]]:
    return [[sum(a[i][k] * b[k][j] for k in range(len(b))) for j in range(len(b[0]))] for i in range(len(a))]


def naive_rollout(weights: torch.Tensor) -> list[list[list[float]]]:
    out = [naive_augmented(weights[0])]
    for w in weights[1:]:
        out.append(matmul(naive_augmented(w), out[-1]))
    return out


# --- rollout --------------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_rollout_equals_naive_loops(causal):
    weights = random_weights(L=3, H=2, T=5, causal=causal)
    got = rollout(weights)
    assert got.shape == (3, 5, 5) and got.dtype == torch.float32
    # float32 against float64 loops: per layer, a row normalisation and a product, each a sum over the 5 tokens
    why = "rollout (float32) vs the naive loops (float64)"
    assert_close(got, torch.tensor(naive_rollout(weights), dtype=torch.float64), terms=5, depth=2 * 3, why=why)
    # the same from a sequence of per-layer tensors, as a trace gives them (the same computation)
    assert torch.equal(rollout(list(weights)), got)


@pytest.mark.parametrize("causal", [False, True])
def test_rollout_rows_sum_to_one(causal):
    got = rollout(random_weights(L=6, H=4, T=40, causal=causal, seed=1))
    assert torch.allclose(got.sum(-1), torch.ones(6, 40), atol=1e-5)
    assert (got >= 0).all()
    if causal:  # a token never draws from a later one
        assert torch.equal(got, got.tril())


def test_residual_and_head_choices():
    w = random_weights(L=1, H=3, T=4, seed=2)[0]
    aug = add_residual(w.mean(0))
    assert torch.allclose(aug, 0.5 * w.mean(0) + 0.5 * torch.eye(4))  # rows already sum to 1: renormalising changes nothing
    assert torch.equal(reduce_heads(w, 1), w[1])
    assert torch.equal(reduce_heads(w, "max"), w.amax(0))
    assert torch.allclose(rollout(w[None], heads=2)[0].double(), add_residual(w[2]))
    with pytest.raises(IndexError, match="head 3 out of range: there are 3 heads"):
        reduce_heads(w, 3)
    with pytest.raises(ValueError, match="heads must be one of"):
        reduce_heads(w, "median")


def naive_joint_rollout(enc, dec, crs) -> list[list[list[float]]]:
    """The encoder-decoder's joint graph over S + T nodes (source first), one full matrix per step, multiplied naively."""
    S, T = enc.shape[-1], dec.shape[-1]
    N = S + T

    def eye():
        return [[1.0 if i == j else 0.0 for j in range(N)] for i in range(N)]

    state = eye()
    for w in enc:  # encoder layers mix the source; the target waits
        step, a = eye(), naive_augmented(w)
        for i in range(S):
            step[i][:S] = a[i]
        state = matmul(step, state)
    out = []
    for w_self, w_cross in zip(dec, crs):
        step, a = eye(), naive_augmented(w_self)  # decoder self-attention mixes the target; the source waits
        for i in range(T):
            step[S + i][S:] = a[i]
        state = matmul(step, state)
        step = eye()  # cross-attention: half the target token itself, half its mean cross-attention over the source
        H = w_cross.shape[0]
        for i in range(T):
            step[S + i] = [0.5 * sum(float(w_cross[h, i, s]) for h in range(H)) / H for s in range(S)] + [
                0.5 if t == i else 0.0 for t in range(T)
            ]
        state = matmul(step, state)
        out.append(state[S:])  # the target rows after this decoder layer
    return out


def test_cross_rollout_equals_naive_joint_graph():
    enc = random_weights(L=2, H=2, T=4, seed=3)
    dec = random_weights(L=3, H=2, T=3, causal=True, seed=4)
    crs = random_weights(L=3, H=2, T=3, n_keys=4, seed=5)
    got = cross_rollout(enc, dec, crs)
    assert got.shape == (3, 3, 4 + 3)
    # float32 in the encoder's rollout (2 layers of a normalisation and a product over its 4 tokens), the rest in float64
    # rounded to float32 once at the end
    why = "cross_rollout vs the naive joint graph (float64)"
    expected = torch.tensor(naive_joint_rollout(enc, dec, crs), dtype=torch.float64)
    assert_close(got, expected, terms=4, depth=2 * 2 + 1, why=why)
    assert torch.allclose(got.sum(-1), torch.ones(3, 3), atol=1e-6)
    # after l decoder layers the source holds 1 - 0.5^l of every target token
    source_share = got[..., :4].sum(-1)
    assert torch.allclose(source_share, torch.tensor([0.5, 0.75, 0.875])[:, None].expand(3, 3), atol=1e-6)


def test_cross_rollout_by_hand():
    # Encoder, 1 layer, 2 source tokens: A = [[1, 0], [.5, .5]] → Â = .5A + .5I = [[1, 0], [.25, .75]].
    # Decoder, 1 layer, 1 target token: self-attention [[1]] → Â = [[1]].
    # Cross-attention [[0, 1]]: the target token reads source token 1, which after the encoder is
    # .25 token 0 + .75 token 1. Half of that (the other half is the residual):
    # source part .5 · [.25, .75] = [.125, .375], target part .5.
    enc = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]])  # (L=1, H=1, 2, 2)
    dec = torch.tensor([[[[1.0]]]])
    crs = torch.tensor([[[[0.0, 1.0]]]])
    assert torch.allclose(cross_rollout(enc, dec, crs), torch.tensor([[[0.125, 0.375, 0.5]]]))


# --- attention flow ------------------------------------------------------------------------------


def test_flow_two_layers_by_hand():
    # Capacities: node j of layer l-1 → node i of layer l is steps[l-1][i, j].
    first = torch.tensor([[0.6, 0.4, 0.0], [0.5, 0.5, 0.0], [0.2, 0.2, 0.6]])
    second = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.3, 0.2, 0.5]])
    # Input 0 → output 2: the only paths are 0 → k → 2, one per middle node k, sharing no edge, so the
    # max flow is the sum of their bottlenecks: min(.6, .3) + min(.5, .2) + min(.2, .5) = .3 + .2 + .2 = .7.
    # (Rollout would give .3·.6 + .2·.5 + .5·.2 = .38: products, not bottlenecks.)
    flows = max_flows(torch.stack([first, second]))
    assert flows[2, 0].item() == pytest.approx(0.7)
    # Input 2 → output 0: node 2 of layer 1 is the only one input 2 reaches, and output 0 reads nothing from it.
    assert flows[0, 2].item() == 0.0


def test_flow_three_layers_by_hand():
    # Two tokens, three steps: this one runs networkx.
    s1 = torch.tensor([[0.6, 0.4], [0.05, 0.95]])
    s2 = torch.tensor([[0.7, 0.3], [0.4, 0.6]])
    s3 = torch.tensor([[0.5, 0.5], [0.1, 0.9]])
    # Input 0 → output 0. Input 0 sends at most .6 to node 0 and .05 to node 1 of layer 1 (the cut right
    # after the source: .65). That much gets through: node 0 of layer 1 sends .5 to node 0 of layer 2 and
    # .1 to node 1; node 1 sends its .05 to node 1 of layer 2; the output takes .5 and .15 (caps .5, .5).
    # A flow of .65 equals a cut of .65, so .65 is the maximum.
    assert max_flows(torch.stack([s1, s2, s3]))[0, 0].item() == pytest.approx(0.65)


def networkx_flow(weights: torch.Tensor) -> torch.Tensor:
    """The paper's construction, built another way: node names, edges from each output back to its inputs, Edmonds-Karp on floats."""
    L, H, T, _ = weights.shape
    graph = nx.DiGraph()
    for layer in range(1, L + 1):
        a = weights[layer - 1].mean(0) * 0.5 + torch.eye(T, dtype=weights.dtype) * 0.5
        a = a / a.sum(-1, keepdim=True)
        for i in range(T):
            for j in range(T):
                graph.add_edge(f"L{layer}_{i}", f"L{layer - 1}_{j}", capacity=float(a[i, j]))
    out = torch.zeros(T, T, dtype=torch.float64)
    for i in range(T):
        for j in range(T):
            out[i, j] = nx.maximum_flow_value(graph, f"L{L}_{i}", f"L0_{j}", flow_func=nx.algorithms.flow.edmonds_karp)
    return out


@pytest.mark.parametrize("L, causal", [(2, False), (3, False), (4, True)])
def test_flow_equals_networkx_on_the_papers_graph(L, causal):
    weights = random_weights(L=L, H=2, T=5, causal=causal, seed=L)
    expected = networkx_flow(weights)
    raw = attention_flow(weights, normalize=False)
    assert raw.shape == (5, 5)
    assert torch.allclose(raw.double(), expected, atol=1e-6)
    normalized = attention_flow(weights)
    assert torch.allclose(normalized.double(), expected / expected.sum(-1, keepdim=True), atol=1e-6)
    assert torch.allclose(normalized.sum(-1), torch.ones(5), atol=1e-6)


@pytest.mark.parametrize("L", [1, 2, 3, 5])
def test_flow_is_bounded_by_one(L):
    # Every output token's incoming capacities are a row of Â, summing to 1: no flow into it exceeds 1.
    raw = attention_flow(random_weights(L=L, H=3, T=6, seed=10 + L), normalize=False)
    assert (raw >= 0).all() and (raw <= 1 + 1e-6).all()
    # one layer: the flow through a single edge is its capacity, so flow equals rollout
    if L == 1:
        # flow in float64 rounded once to float32; rollout's row normalisation (6 tokens) in float32, after the float64
        # head mean is rounded to float32
        why = "one-layer flow vs rollout (another computation)"
        assert_close(raw, rollout(random_weights(L=1, H=3, T=6, seed=11))[0], terms=6, depth=2, why=why)


def test_cross_flow_matches_networkx_on_the_joint_graph():
    enc = random_weights(L=1, H=2, T=3, seed=20)
    dec = random_weights(L=1, H=2, T=2, causal=True, seed=21)
    crs = random_weights(L=1, H=2, T=2, n_keys=3, seed=22)
    got = cross_flow(enc, dec, crs, normalize=False)
    assert got.shape == (2, 5)
    # The joint graph by hand: source nodes s0..s2, target nodes t0, t1; the encoder layer, then the
    # decoder's self step, then its cross step (half the target token itself, half its cross-attention).
    a_enc, a_dec, a_crs = add_residual(enc[0].mean(0)), add_residual(dec[0].mean(0)), crs[0].mean(0)
    graph = nx.DiGraph()
    names = ["s0", "s1", "s2", "t0", "t1"]
    for i in range(3):
        for j in range(3):
            graph.add_edge(f"0{names[j]}", f"1{names[i]}", capacity=float(a_enc[i, j]))
    for i in range(2):
        graph.add_edge(f"0t{i}", f"1t{i}", capacity=1.0)  # the target waits through the encoder layer
    for i in range(3):
        graph.add_edge(f"1s{i}", f"2s{i}", capacity=1.0)  # the source waits through the decoder's self step
    for i in range(2):
        for j in range(2):
            graph.add_edge(f"1t{j}", f"2t{i}", capacity=float(a_dec[i, j]))
    for i in range(2):
        graph.add_edge(f"2t{i}", f"3t{i}", capacity=0.5)
        for s in range(3):
            graph.add_edge(f"2s{s}", f"3t{i}", capacity=float(0.5 * a_crs[i, s]))
    for i in range(2):
        for j, name in enumerate(names):
            expected = nx.maximum_flow_value(graph, f"0{name}", f"3t{i}")
            assert got[i, j].item() == pytest.approx(expected, abs=1e-6)


def test_flow_too_long_says_the_limit_and_the_length():
    assert [flow_max_tokens(n) for n in range(1, 8)] == [FLOW_MAX_TOKENS_SHALLOW] * 2 + [FLOW_MAX_TOKENS, 15, 14, 14, 0]
    for L, T in ((3, FLOW_MAX_TOKENS + 1), (6, 15), (2, FLOW_MAX_TOKENS_SHALLOW + 1)):
        with pytest.raises(FlowTooLong, match=f"through {L} attention steps is limited to {T - 1} tokens, this input has {T}"):
            attention_flow(torch.full((L, 1, T, T), 1 / T))
    steps = FLOW_MAX_STEPS + 1
    with pytest.raises(FlowTooLong, match=f"limited to {FLOW_MAX_STEPS} attention steps, this graph has {steps}"):
        attention_flow(torch.full((steps, 1, 4, 4), 0.25))
    # cross-attention counts the joint graph: encoder layers + 2 per decoder layer, source + target tokens
    enc, dec, crs = torch.full((2, 1, 8, 8), 1 / 8), torch.full((2, 1, 7, 7), 1 / 7), torch.full((2, 1, 7, 8), 1 / 8)
    with pytest.raises(FlowTooLong, match="through 6 attention steps is limited to 14 tokens, this input has 15"):
        cross_flow(enc, dec, crs)
    assert issubclass(FlowTooLong, ValueError)


# --- on traces -----------------------------------------------------------------------------------


def test_shipped_lm_rollout_and_flow():
    ckpt = load_checkpoint(assets_dir() / "lm.safetensors")
    trace = trace_text(ckpt, "the dog runs .")
    T = len(trace.query_tokens("decoder self"))
    r = rollout_trace(trace, "decoder self")
    assert r.shape == (trace.n_layers("decoder self"), T, T)
    assert torch.allclose(r.sum(-1), torch.ones_like(r[..., 0]), atol=1e-5)
    assert torch.equal(r, r.tril())  # causal all the way down
    f = flow_trace(trace, "decoder self")
    assert f.shape == (T, T) and torch.allclose(f.sum(-1), torch.ones(T), atol=1e-5)
    # One layer: flow = Â = rollout, computed another way: the head mean (over H) and the row normalisation (over T).
    why = "one-layer flow vs rollout of the same trace (another computation)"
    H = trace.attention("decoder self", 0).weights.shape[1]
    assert_close(flow_trace(trace, "decoder self", layer=0), r[0], terms=max(H, T), depth=2, why=why)


def test_encoder_decoder_trace(make_checkpoint):
    trace = trace_text(make_checkpoint("encoder-decoder"), "the cat sat on the mat", target="the dogs sleep")
    S, T = len(trace.key_tokens("cross")), len(trace.query_tokens("cross"))
    enc = rollout_trace(trace, "encoder self")
    dec = rollout_trace(trace, "decoder self")
    crs = rollout_trace(trace, "cross")
    assert enc.shape == (2, S, S) and dec.shape == (2, T, T) and crs.shape == (2, T, S)
    weights = [[trace.attention(k, layer).weights[0] for layer in range(2)] for k in ("encoder self", "decoder self", "cross")]
    assert torch.equal(crs, cross_rollout(*weights)[..., :S])  # the same computation on the same weights: bit for bit
    assert torch.allclose(crs.sum(-1), torch.tensor([[0.5], [0.75]]).expand(2, T), atol=1e-6)
    flows = flow_trace(trace, "cross", layer=0)  # encoder (2) + one decoder layer (2) = 4 steps
    assert flows.shape == (T, S) and (flows.sum(-1) < 1).all()
    assert flow_trace(trace, "encoder self").shape == (S, S)
