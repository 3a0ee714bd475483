"""The options modern decoders need (RoPE, grouped-query attention, RMSNorm, gated MLPs, sliding windows,
q/k norms, the parallel residual), each against an independent computation of the same thing.

The Hugging Face families themselves are checked against `transformers` in test_modern_import.py; here
each option is checked on its own: grouped-query attention against plain multi-head attention whose
key/value weights are copies, RoPE against the complex-number form of the paper, the sliding window
against the weights it must zero, and the fused path against the manual one for every combination.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from numerics import assert_close, assert_same_bits, longest_sum, sublayers

from transformer.checkpoints import budget as B
from transformer.model.config import ConfigError, ModelConfig
from transformer.model.network import TransformerModel
from transformer.model.rope import cos_sin, inverse_frequencies, rotate

pytestmark = pytest.mark.numerics

MODERN = dict(
    kind="decoder", vocab_size=60, n_layers=2, n_heads=4, d_model=24, d_ff=40, max_len=64, positional="rope",
    norm="rms", mlp="gated", activation="silu", attn_bias=False, attn_out_bias=False, mlp_bias=False,
    scale_embeddings=False, final_norm=True, tie_embeddings=False,
)  # fmt: skip

OPTIONS = {
    "llama": {},
    "gqa": dict(n_kv_heads=2),
    "mqa": dict(n_kv_heads=1),
    "head_dim": dict(head_dim=10, n_kv_heads=2),  # 4 × 10 ≠ 24
    "window": dict(sliding_window=5, full_attention_layers=(0,)),
    "partial_rope": dict(rotary_fraction=0.5, rope_theta=500.0, head_dim=8),
    "linear": dict(rope_scaling="linear", rope_factor=4.0),
    "dynamic": dict(rope_scaling="dynamic", rope_factor=2.0, rope_original_max_len=8),
    "llama3": dict(rope_scaling="llama3", rope_factor=8.0, rope_original_max_len=16, rope_theta=50000.0),
    "qk_norm": dict(qk_norm=True, n_kv_heads=2),
    "gemma": dict(norm="rms_plus_one", activation="gelu_tanh", scale_embeddings=True, tie_embeddings=True, head_dim=8),
    "neox": dict(
        norm="layer",
        mlp="plain",
        activation="gelu",
        parallel_residual=True,
        rotary_fraction=0.25,
        attn_bias=True,
        attn_out_bias=True,
        mlp_bias=True,
        head_dim=8,
    ),  # fmt: skip
    "qwen2_bias": dict(attn_bias=True, n_kv_heads=2),
    "nanogpt_no_bias": dict(positional="learned", norm="layer", norm_bias=False, mlp="plain", activation="gelu"),
}


def modern(name: str, **more) -> ModelConfig:
    return ModelConfig(**{**MODERN, **OPTIONS[name], **more})


def randomised(cfg: ModelConfig, seed: int = 0) -> TransformerModel:
    """A model whose norms and biases are random too: an identity norm or a zero bias hides a swapped one."""
    torch.manual_seed(seed)
    model = TransformerModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.normal_(0.0 if "bias" in name or cfg.norm == "rms_plus_one" else 1.0, 0.3)
            else:
                p.normal_(0.0, 0.3)
    return model


@pytest.mark.parametrize("name", OPTIONS)
def test_the_fused_path_equals_the_manual_one(name):
    cfg = modern(name)
    model = randomised(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, 23))
    with torch.inference_mode():
        fused, _ = model(ids)
        traced, trace = model(ids, trace=True)
    assert_close(fused, traced, terms=longest_sum(cfg, 23, vocab=True), depth=sublayers(cfg), why="SDPA vs manual")
    for layer in range(cfg.n_layers):
        att = trace.attention("decoder self", layer)
        assert att.k.shape == (2, cfg.kv_heads, 23, cfg.d_head)  # one per key/value head, never repeated
        assert att.q.shape == (2, cfg.n_heads, 23, cfg.d_head)
        assert_close(att.weights.sum(-1), torch.ones(2, cfg.n_heads, 23), terms=23, why="rows sum to 1")


@pytest.mark.parametrize("name", OPTIONS)
def test_model_bytes_and_trace_bytes_count_every_tensor(name):
    cfg = modern(name)
    with torch.device("meta"):
        model = TransformerModel(cfg)
    assert B.model_bytes(cfg) == sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    model = randomised(cfg)
    with torch.inference_mode():
        _, trace = model(torch.randint(0, cfg.vocab_size, (1, 11)), trace=True)
    assert B.trace_bytes(cfg, 11) == trace.nbytes()


@pytest.mark.parametrize("n_kv_heads", [1, 2])
def test_grouped_query_attention_is_multi_head_attention_with_shared_keys_and_values(n_kv_heads):
    """The same model with every key/value head copied to its query heads (n_kv_heads = n_heads) computes the same."""
    grouped = randomised(modern("llama", n_kv_heads=n_kv_heads))
    plain = TransformerModel(modern("llama")).eval()
    group = 4 // n_kv_heads
    state = {}
    for name, t in grouped.state_dict().items():
        if name.endswith(("k_proj.weight", "v_proj.weight")):  # (H_kv · d_head, d_model) -> each head repeated
            t = t.view(n_kv_heads, 6, 24).repeat_interleave(group, dim=0).reshape(24, 24)
        state[name] = t
    plain.load_state_dict(state)
    ids = torch.randint(0, 60, (1, 17))
    with torch.inference_mode():
        _, ours = grouped(ids, trace=True)
        _, ref = plain(ids, trace=True)
    cfg = grouped.cfg
    for layer in range(2):
        a, b = ours.attention("decoder self", layer), ref.attention("decoder self", layer)
        depth = sublayers(cfg) * (layer + 1) // cfg.n_layers
        assert_close(a.weights, b.weights, terms=longest_sum(cfg, 17), depth=depth, why="GQA vs copied heads")
        for h in range(4):
            assert_close(a.k[:, h // group], b.k[:, h], terms=24, depth=depth, why="a query head's key/value head")
    assert_close(ours.logits, ref.logits, terms=longest_sum(cfg, 17, vocab=True), depth=sublayers(cfg), why="logits")


def test_rope_is_the_papers_complex_rotation_and_scores_depend_only_on_distance():
    """RoFormer's form: pairs (x_i, x_{i+r/2}) as complex numbers times e^{i·pos·θ_i}, written independently here."""
    cfg = modern("partial_rope")
    T, d_head, r = 9, cfg.d_head, cfg.rotary_dim
    x = torch.randn(1, 1, T, d_head, dtype=torch.float64)
    theta = 1.0 / cfg.rope_theta ** (torch.arange(0, r, 2, dtype=torch.float64) / r)
    z = torch.complex(x[..., : r // 2], x[..., r // 2 : r]) * torch.exp(1j * torch.arange(T)[:, None] * theta)
    expected = torch.cat([z.real, z.imag, x[..., r:]], dim=-1)
    cos, sin = cos_sin(cfg, T)
    assert_close(rotate(x.float(), cos, sin), expected.float(), terms=2, depth=3, magnitude=4.0 * T, why="rotation")
    # q at m and k at n: the score is a function of n − m
    q, k = torch.randn(d_head), torch.randn(d_head)
    qs, ks = rotate(q.expand(1, 1, T, d_head), cos, sin)[0, 0], rotate(k.expand(1, 1, T, d_head), cos, sin)[0, 0]
    assert_close(
        qs[2] @ ks[5], qs[4] @ ks[7], terms=d_head, depth=4, magnitude=float(q.abs().sum() * k.abs().max()) * T, why="relative"
    )


def test_rope_scalings_stretch_the_wavelengths_as_their_formulas_say():
    base = inverse_frequencies(modern("llama"), 10)
    assert torch.equal(inverse_frequencies(modern("linear"), 10), base / 4.0)
    dyn = modern("dynamic")
    assert torch.equal(inverse_frequencies(dyn, 8), base)  # up to the original length: unchanged
    d = dyn.rotary_dim
    grown = dyn.rope_theta * ((2.0 * 20 / 8) - 1) ** (d / (d - 2))
    assert_close(inverse_frequencies(dyn, 20), 1.0 / grown ** (torch.arange(0, d, 2).float() / d), terms=d, why="NTK")
    l3 = modern("llama3")
    plain = 1.0 / l3.rope_theta ** (torch.arange(0, 6, 2).float() / 6)
    wavelen = 2 * math.pi / plain
    scaled = inverse_frequencies(l3, 10)
    for w, p, s in zip(wavelen.tolist(), plain.tolist(), scaled.tolist()):
        if w < 16 / 4.0:  # short wavelengths are kept
            assert s == p
        elif w > 16 / 1.0:  # long ones divided by the factor
            assert s == pytest.approx(p / 8.0, rel=1e-6)
        else:
            assert p / 8.0 < s < p


def test_the_sliding_window_zeroes_weights_beyond_it_and_not_in_full_layers():
    model = randomised(modern("window"))
    with torch.inference_mode():
        _, trace = model(torch.randint(0, 60, (1, 20)), trace=True)
    full, windowed = trace.attention("decoder self", 0), trace.attention("decoder self", 1)
    i, j = torch.arange(20)[:, None], torch.arange(20)[None, :]
    assert bool((full.mask[0, 0] == (j <= i)).all())
    assert bool((windowed.mask[0, 0] == ((j <= i) & (i - j < 5))).all())
    assert bool((windowed.weights[0][:, (i - j >= 5)] == 0).all())
    assert bool((full.weights[0][:, (i - j >= 5) & (j <= i)] > 0).all())


def test_the_trace_shows_q_and_k_before_and_after_rotation():
    model = randomised(modern("gqa"))
    with torch.inference_mode():
        _, trace = model(torch.randint(0, 60, (1, 7)), trace=True)
    att = trace.attention("decoder self", 1)
    cos, sin = cos_sin(model.cfg, 7)
    assert_same_bits(rotate(att.q_pre, cos, sin), att.q, why="the same computation, read twice")
    assert_same_bits(rotate(att.k_pre, cos, sin), att.k, why="the same computation, read twice")
    assert torch.equal(att.q_pre[:, :, 0], att.q[:, :, 0])  # position 0 turns by angle 0
    head = trace.head("decoder self", 1, 3)
    assert torch.equal(head["k"], att.k[0, 1]) and torch.equal(head["k_pre"], att.k_pre[0, 1])  # head 3 reads kv head 1
    names = trace.named_tensors()
    assert "decoder.layers.0.self_attn.q_pre" in names and "decoder.layers.0.self_attn.k_pre" in names


def test_pooled_maps_equal_the_traced_ones_for_a_modern_model():
    from transformer.model.attention import block_max
    from transformer.model.trace import pool_blocks

    model = randomised(modern("window", n_kv_heads=2))
    ids = torch.randint(0, 60, (1, 50))
    with torch.inference_mode():
        _, trace = model(ids, trace=True)
        _, maps = model(ids, pool=8)
    for layer in range(2):
        w = trace.attention("decoder self", layer).weights
        expected = block_max(w, *pool_blocks(50, 50, 8))
        assert_close(
            maps["decoder self"][layer],
            expected,
            terms=longest_sum(model.cfg, 50),
            depth=sublayers(model.cfg),
            why="pooled vs traced",
        )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(n_heads=4, n_kv_heads=3), "n_heads (4) must be a multiple of n_kv_heads (3)"),
        (dict(rotary_fraction=0.1), "rotates 0 dims"),
        (dict(rope_scaling="yarn"), "rope_scaling must be one of"),
        (dict(rope_scaling="llama3", rope_factor=8.0), "needs rope_original_max_len"),
        (dict(norm="batch"), "norm must be one of"),
        (dict(full_attention_layers=(5,)), "full_attention_layers must be layer numbers below 2"),
        (dict(d_model=25), "or head_dim given"),
    ],
)
def test_bad_modern_options_are_refused_by_name(fields, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ModelConfig(**{**MODERN, **fields})


def test_every_combination_of_norm_and_residual_builds_and_runs():
    for norm, parallel, mlp in itertools.product(("layer", "rms", "rms_plus_one"), (False, True), ("plain", "gated")):
        cfg = ModelConfig(**{**MODERN, "norm": norm, "parallel_residual": parallel, "mlp": mlp})
        with torch.inference_mode():
            logits, _ = randomised(cfg)(torch.randint(0, 60, (1, 5)))
        assert logits.shape == (1, 5, 60) and bool(torch.isfinite(logits).all())
