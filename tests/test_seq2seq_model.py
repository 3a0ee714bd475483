"""The options real encoder-decoders need (T5's relative bias and unscaled scores, BART's offset positions and
logits bias, Marian's and M2M-100's sinusoid layouts, a decoder deeper or shallower than the encoder), each
against an independent computation, and greedy decoding with a cache against recomputing the whole prefix.

The Hugging Face families themselves are checked against `transformers` in test_import_t5.py and
test_import_bart_family.py; here each option is checked on its own.
"""

from __future__ import annotations

import math

import pytest
import torch
from numerics import assert_close, assert_same_greedy, longest_sum, sublayers

from transformer.api import greedy_decode
from transformer.checkpoints import budget as B
from transformer.decoding import Decoding, DecodingError, from_generation_config
from transformer.model.config import ConfigError, ModelConfig
from transformer.model.network import TransformerModel
from transformer.model.positions import relative_buckets, sinusoidal_table

pytestmark = pytest.mark.numerics

BASE = dict(kind="encoder-decoder", vocab_size=53, n_layers=2, n_heads=4, d_model=24, d_ff=40, max_len=48)
OPTIONS = {
    "t5": dict(
        positional="relative",
        scale_scores=False,
        norm="rms",
        mlp="gated",
        activation="gelu_tanh",
        n_decoder_layers=3,
        rel_buckets=8,
        rel_max_distance=12,
        head_scale=24**-0.5,
        attn_bias=False,
        attn_out_bias=False,
        mlp_bias=False,
        scale_embeddings=False,
    ),  # fmt: skip
    "bart": dict(
        positional="learned",
        position_offset=2,
        embed_norm=True,
        norm_first=False,
        logits_bias=True,
        activation="gelu",
        scale_embeddings=False,
        n_decoder_layers=1,
    ),  # fmt: skip
    "mbart": dict(positional="learned", position_offset=2, embed_norm=True, final_norm=True, logits_bias=True),
    "marian": dict(sinusoidal_layout="split", norm_first=False, logits_bias=True, activation="silu"),
    "m2m": dict(sinusoidal_layout="fairseq", position_offset=2, tie_embeddings=False, activation="relu"),
}


def config(name: str, **more) -> ModelConfig:
    return ModelConfig(**{**BASE, **OPTIONS[name], **more})


def randomised(cfg: ModelConfig, seed: int = 0) -> TransformerModel:
    """Every weight random, norm gains around 1 and biases around 0 but never exactly: a dropped one shows."""
    torch.manual_seed(seed)
    model = TransformerModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0 if "norm" in name and name.endswith("weight") else 0.0, 0.3)
    return model


def ids(cfg: ModelConfig, *shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", OPTIONS)
def test_fused_manual_and_pooled_paths_agree(name):
    cfg = config(name)
    model = randomised(cfg)
    src, tgt = ids(cfg, 2, 30), ids(cfg, 2, 21, seed=2)
    with torch.inference_mode():
        fused, _ = model(src, tgt)
        traced, trace = model(src, tgt, trace=True)
        _, pooled = model(src, tgt, pool=64)  # 64 ≥ every length: the pooled maps are the weights themselves
    assert_close(fused, traced, terms=longest_sum(cfg, 30, vocab=True), depth=sublayers(cfg), why="SDPA vs manual")
    assert trace.n_layers("encoder self") == cfg.n_layers
    assert trace.n_layers("decoder self") == trace.n_layers("cross") == cfg.dec_layers == len(model.decoder.layers)
    for kind in cfg.attention_kinds:
        assert cfg.layers_of(kind) == trace.n_layers(kind) == pooled[kind].shape[0]
        for layer in range(cfg.layers_of(kind)):
            assert_close(pooled[kind][layer], trace.attention(kind, layer).weights, terms=30, why=f"{kind} {layer}")


@pytest.mark.parametrize("name", OPTIONS)
def test_model_bytes_and_trace_bytes_count_every_tensor(name):
    cfg = config(name)
    with torch.device("meta"):
        model = TransformerModel(cfg)
    assert B.model_bytes(cfg) == sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    model = randomised(cfg)
    with torch.inference_mode():
        _, trace = model(ids(cfg, 1, 13), ids(cfg, 1, 9), trace=True)
    assert B.trace_bytes(cfg, 13, 9) == trace.nbytes()


# --- T5: relative position bias, unscaled scores -------------------------------------------------------------


@pytest.mark.parametrize(
    ("distance", "bidirectional", "bucket"),
    [
        # 32 buckets, max distance 128 (T5's): the encoder has 16 per direction, 8 exact, then log-spaced
        (0, True, 0), (-1, True, 1), (1, True, 17), (-7, True, 7), (7, True, 23), (-8, True, 8),
        (-20, True, 10),  # 8 + ⌊ln(20/8) / ln(128/8) · 8⌋ = 8 + ⌊2.64⌋
        (-127, True, 15), (-1000, True, 15), (1000, True, 31),
        # the decoder: only the past, 32 buckets, 16 exact
        (3, False, 0), (-1, False, 1), (-15, False, 15), (-16, False, 16),
        (-127, False, 31),  # 16 + ⌊ln(127/16) / ln(8) · 16⌋ = 16 + ⌊15.94⌋
        (-40, False, 23),  # 16 + ⌊ln(2.5) / ln(8) · 16⌋ = 16 + ⌊7.05⌋
    ],
)  # fmt: skip
def test_relative_buckets_are_t5s(distance, bidirectional, bucket):
    assert int(relative_buckets(torch.tensor(distance), bidirectional, 32, 128)) == bucket


def test_t5_scores_are_q_dot_k_plus_the_traced_bias_unscaled():
    cfg = config("t5")
    model = randomised(cfg)
    with torch.inference_mode():
        _, trace = model(ids(cfg, 1, 20), ids(cfg, 1, 15), trace=True)
    table = {"encoder self": model.encoder.rel_bias.weight, "decoder self": model.decoder.rel_bias.weight}
    for kind in cfg.attention_kinds:
        for layer in range(cfg.layers_of(kind)):
            for h in range(cfg.n_heads):
                head = trace.head(kind, layer, h)
                qk = head["q"] @ head["k"].T  # no 1/√d_head
                if kind == "cross":
                    assert "bias" not in head  # T5's cross-attention has no position bias
                    assert_close(head["scores"], qk, terms=cfg.d_head, why="cross scores")
                    continue
                n_q, n_k = head["scores"].shape
                distance = torch.arange(n_k)[None, :] - torch.arange(n_q)[:, None]
                buckets = relative_buckets(distance, kind == "encoder self", cfg.rel_buckets, cfg.rel_max_distance)
                assert torch.equal(head["bias"], table[kind][buckets, h])  # the same table in every layer
                assert_close(head["scores"], qk + head["bias"], terms=cfg.d_head, why=f"{kind} scores")


def test_the_lm_head_scales_the_decoder_output_and_adds_the_logits_bias():
    for name in ("t5", "bart", "m2m"):
        cfg = config(name)
        model = randomised(cfg)
        hidden = torch.randn(2, 5, cfg.d_model)
        weight = model.tok_embed.weight if cfg.tie_embeddings else model.lm_head.weight
        expected = (hidden * cfg.head_scale) @ weight.T + (model.logits_bias if cfg.logits_bias else 0)
        assert_close(model.lm_logits(hidden), expected, terms=cfg.d_model, why=name)


# --- absolute positions: offsets and layouts -----------------------------------------------------------------


@pytest.mark.parametrize("layout", ["interleaved", "split", "fairseq"])
@pytest.mark.parametrize("d", [8, 9])
def test_sinusoid_layouts_from_their_formulas(layout, d):
    """Each entry from math.sin / math.cos: ours interleaves, Marian puts sin first, M2M-100 spaces its frequencies
    over d/2 − 1 steps; with an offset, row t is position offset + t."""
    table = sinusoidal_table(6, d, layout, offset=2)
    half = d // 2
    for row in range(6):
        pos = row + 2
        for i in range((d + 1) // 2 if layout != "fairseq" else half):
            if layout == "fairseq":
                w = math.exp(-i * math.log(10000.0) / (half - 1))
                sin_at, cos_at = i, half + i
            else:
                w = 10000.0 ** (-2 * i / d)
                sin_at, cos_at = (2 * i, 2 * i + 1) if layout == "interleaved" else (i, d - half + i)
            assert table[row, sin_at].item() == pytest.approx(math.sin(pos * w), abs=1e-5)
            if i < half:
                assert table[row, cos_at].item() == pytest.approx(math.cos(pos * w), abs=1e-5)
    if layout == "fairseq" and d % 2:
        assert torch.equal(table[:, -1], torch.zeros(6))  # fairseq pads an odd width with a zero column


def test_learned_positions_start_at_the_offset():
    cfg = config("bart")
    model = randomised(cfg)
    x = torch.randn(1, 7, cfg.d_model)
    embed = model.encoder.embed
    expected = embed.norm(x + model.encoder.embed.positions.weight[2:9])  # BART: rows 0 and 1 are never read
    assert_close(embed(x), expected, terms=2, why="offset positions")
    assert embed.positions.weight.shape == (cfg.max_len + 2, cfg.d_model)


# --- greedy decoding: the cache, the rules -------------------------------------------------------------------


def recomputed_greedy(model: TransformerModel, src: list[int], decoding: Decoding, new: int) -> list[int]:
    """Greedy decoding the slow way: the whole prefix through the decoder at every step."""
    out = [decoding.start]
    limit = decoding.limit(model.cfg.max_len, new)
    with torch.inference_mode():
        memory, _ = model.encode(torch.tensor([src]))
        while len(out) < limit:
            hidden, _ = model.decode(torch.tensor([out]), memory)
            nxt = int(decoding.process(torch.tensor([out]), model.lm_logits(hidden[:, -1]), limit).argmax())
            if nxt in decoding.eos:
                break
            out.append(nxt)
    return out[1:]


@pytest.mark.parametrize("name", OPTIONS)
def test_greedy_with_a_cache_equals_recomputing_the_prefix(name):
    cfg = config(name)
    model = randomised(cfg, seed=3)
    src = ids(cfg, 1, 12)[0].tolist()
    decoding = Decoding(start=1, eos=(2,), forced_bos=5, no_repeat_ngram_size=2, min_length=4)
    fast = greedy_decode(model, src, decoding, max_new_tokens=20)
    assert_same_greedy(model, decoding, src, fast, recomputed_greedy(model, src, decoding, 20), why=name)
    assert fast[0] == 5 and len(fast) >= 3  # the forced token, then at least min_length − 1 tokens before any EOS


def test_the_rules_apply_as_generate_applies_them():
    """Hand-worked steps: token t scores t − 3, so repetition penalties halve or double, and each rule is seen."""
    d = Decoding(start=0, eos=(2,), forced_bos=7, forced_eos=(2,), min_length=3, no_repeat_ngram_size=2,
                 bad_words=((4,), (5, 6)), suppress=(9,), begin_suppress=(8,), repetition_penalty=2.0)  # fmt: skip
    logits = torch.arange(12.0)[None] - 3.0
    inf = float("-inf")

    def step(*seq: int, max_length: int = 10) -> list[float]:
        return d.process(torch.tensor([seq]), logits, max_length)[0].tolist()

    assert step(0) == [inf] * 7 + [0.0] + [inf] * 4  # the first free step: the forced BOS and nothing else
    # length 2 < min_length: no EOS; the first token after the forced one: no 8; 4 and 9 never; 0 and 7 penalised
    assert step(0, 7) == [-6.0, -2.0, inf, 0.0, inf, 2.0, 3.0, 2.0, inf, inf, 7.0, 8.0]
    # "7 5" happened, and the text ends in 7: 5 would repeat the bigram
    assert step(0, 7, 5, 7) == [-6.0, -2.0, -1.0, 0.0, inf, inf, 3.0, 2.0, 5.0, inf, 7.0, 8.0]
    # the text ends in 5: 6 would complete the bad words "5 6"; 3's logit 0 is neither halved nor doubled
    assert step(0, 7, 3, 5) == [-6.0, -2.0, -1.0, 0.0, inf, 1.0, inf, 2.0, 5.0, inf, 7.0, 8.0]
    assert step(0, 7, 1, 3, 10, 11, 6, 8, 5) == [inf, inf, 0.0] + [inf] * 9  # the last step max_length allows: EOS


def test_generation_settings_are_read_as_generate_reads_them():
    d = from_generation_config(
        {"bos_token_id": 0, "eos_token_id": [2, 3], "max_new_tokens": 40, "max_length": 5, "bad_words_ids": [[2], [7], [5, 6]],
         "forced_bos_token_id": 9, "min_new_tokens": 2, "repetition_penalty": None, "sequence_bias": {"1": 2.0}},
        vocab_size=10,
    )  # fmt: skip
    assert d.start == 0  # no decoder_start_token_id: generate falls back to bos_token_id
    assert d.eos == (2, 3) and d.prefix == (0, 9)
    assert d.max_length == 41 and d.min_length == 3  # max_new_tokens beats max_length; both count the start token
    assert d.bad_words == ((7,), (5, 6))  # an EOS is never a bad word
    assert d.ignored == ("sequence_bias",)  # named on the Checkpoint page: we do not apply it
    assert Decoding.from_facts(d.to_facts(), 10) == d
    bare = from_generation_config({"decoder_start_token_id": 0, "eos_token_id": 1}, vocab_size=10)
    assert (bare.max_length, bare.default_length) == (21, True)  # generate's default: 20 new tokens
    assert bare.limit(max_len=512) == 21 and bare.limit(512, max_new_tokens=30) == 31  # max_new_tokens replaces it
    assert bare.describe(lambda t: f"<{t}>", 512) == (
        "starts with <0>; ends at <1>; at most 20 tokens after the start (transformers' default: the model sets no max_length)"
    )
    with pytest.raises(DecodingError, match="eos_token_id is not set"):
        from_generation_config({"decoder_start_token_id": 0}, 10)
    with pytest.raises(DecodingError, match="not a token id"):
        from_generation_config({"decoder_start_token_id": 0, "eos_token_id": 10}, 10)
    with pytest.raises(DecodingError, match="no first token"):
        from_generation_config({"eos_token_id": 1}, 10)


def test_configs_the_options_cannot_describe_are_refused_by_name():
    with pytest.raises(ConfigError, match="n_decoder_layers is for encoder-decoders"):
        ModelConfig(kind="decoder", n_decoder_layers=2)
    with pytest.raises(ConfigError, match="sinusoidal_layout must be one of"):
        config("marian", sinusoidal_layout="halves")
    with pytest.raises(ConfigError, match="rel_max_distance"):
        config("t5", rel_buckets=32, rel_max_distance=16)
    with pytest.raises(ConfigError, match="position_offset must be a non-negative integer"):
        config("bart", position_offset=-1)
