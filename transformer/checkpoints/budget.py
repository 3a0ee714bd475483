"""How much memory a model and its traces take, worked out from the config before anything is allocated.

One server process holds the models and traces of every session, so an uploaded checkpoint is judged by
arithmetic on its config first: a 1 MB file may describe a model of many gigabytes (a sinusoidal position
table is never stored in the file). `check_config` refuses a config, naming the field, unless

1. every size field is an integer under a generous sanity cap (`FIELD_CAPS`), so the arithmetic itself
   cannot be abused (and no meta-device model is built with a million layers);
2. the model (float32 weights + the sinusoidal position tables, which are buffers) fits `budget.model_bytes`;
3. a full trace of a short text (min(max_len, MIN_TRACE_TOKENS) tokens) fits `budget.trace_bytes`;
4. the light pass over a text of max_len tokens (`forward(pool=…)`, what the model view draws long texts
   with) fits `budget.trace_bytes` too.

A full trace at max_len need not fit: `max_trace_tokens(cfg, budget)` is the longest text whose full trace
does, and the app gives longer texts the light pass (model view) or cuts them there, with a message. This
is the issue's "weights + position tables + a trace at max_len" with the trace at max_len being the light
one: a model with a long max_len (2048 tokens, 6 × 12 heads: a 2.4 GiB full trace) stays usable.

Byte counts are for one text (batch 1) in float32, as `load_checkpoint` converts every model to float32.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from transformer.model.attention import query_block_rows
from transformer.model.config import ModelConfig

F32, BOOL = 4, 1  # bytes per element
MiB, GiB, TiB = 1024**2, 1024**3, 1024**4

# Generous upper bounds, far above any model this app can show (GPT-2 XL: vocab 50257, 48 layers, 25 heads,
# d_model 1600, d_ff 6400, max_len 1024); a config past one is refused before any other arithmetic.
FIELD_CAPS = {
    "vocab_size": 1_000_000,
    "max_len": 1_000_000,
    "n_layers": 64,  # GPT-2 XL has 48; the shape check builds the model on the meta device, ~11 ms a layer
    "n_heads": 1024,
    "d_model": 65_536,
    "d_ff": 262_144,
    "n_classes": 100_000,
    "n_token_types": 1024,
    "n_decoder_layers": 64,
    "rel_buckets": 4096,  # T5 has 32
    "position_offset": 4096,  # BART and M2M-100 have 2
}
MIN_TRACE_TOKENS = 64  # a model must be able to show a full trace of a sentence or two
LIGHT_PASS_CELLS = 64  # the model view's thumbnails: viz.grid.MAX_CELLS (transformer/ cannot import viz/)

# The default budget, fitted to the machine: 1/16 of physical memory for one model and 1/32 for one trace,
# between the floor and the cap. A 24 GiB classroom server shared by 30 sessions gets the caps, 1 GiB and
# 512 MiB: eight cached uploads (server.shared.load_upload keeps 8) are then at most 8 GiB, and a trace is never more
# than a fifth of a 2048-token 6 × 12 one. The shipped models take a few MB; all-MiniLM-L6-v2 (22.7 M
# parameters, max_len 512) takes 86 MiB and its full trace at 512 tokens 176 MiB, so even the floors accept it.
MODEL_CAP, MODEL_FLOOR = 1 * GiB, 256 * MiB
TRACE_CAP, TRACE_FLOOR = 512 * MiB, 256 * MiB
MODEL_MB_ENV = "ATTNVIZ_MAX_MODEL_MB"  # overrides, in MiB: a whole number from 1 to MAX_ENV_MB
TRACE_MB_ENV = "ATTNVIZ_MAX_TRACE_MB"
MAX_ENV_MB = 1024 * 1024  # 1 TiB


class BudgetError(ValueError):
    """A config this server cannot hold; `field` is the config field to change."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Budget:
    """The memory one model and one trace may take on this server, in bytes."""

    model_bytes: int  # one loaded model: weights + position tables
    trace_bytes: int  # one full trace (`Trace.nbytes`), and the light pass of a text of max_len tokens

    def __post_init__(self) -> None:
        for name in ("model_bytes", "trace_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"Budget.{name} must be a positive number of bytes, got {value!r}")


def physical_memory() -> int | None:
    """Bytes of RAM on this machine, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _env_mb(environ: Mapping[str, str], name: str, default: int) -> int:
    value = environ.get(name, "").strip()
    if not value:
        return default
    if not re.fullmatch(r"\d+", value) or not 1 <= int(value) <= MAX_ENV_MB:
        raise ValueError(f"{name}={value!r}: expected a whole number of MiB from 1 to {MAX_ENV_MB}")
    return int(value) * MiB


def default_budget(environ: Mapping[str, str] | None = None, memory: int | None = None) -> Budget:
    """This server's budget: fitted to `memory` (default: this machine's RAM), overridden by the environment.

    Raises ValueError naming the variable when ATTNVIZ_MAX_MODEL_MB or ATTNVIZ_MAX_TRACE_MB is not a
    whole number of MiB: a misconfigured server should fail loudly, not run with a guess.
    """
    environ = os.environ if environ is None else environ
    memory = physical_memory() if memory is None else memory
    if memory is None:
        model, trace = MODEL_CAP, TRACE_CAP
    else:
        model = min(MODEL_CAP, max(MODEL_FLOOR, memory // 16))
        trace = min(TRACE_CAP, max(TRACE_FLOOR, memory // 32))
    return Budget(_env_mb(environ, MODEL_MB_ENV, model), _env_mb(environ, TRACE_MB_ENV, trace))


def format_bytes(n: int) -> str:
    """1288490188 -> '1.2 GiB'."""
    for unit, size in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


# --- the model: weights and position tables -------------------------------------------------------------


def model_parts(cfg: ModelConfig) -> dict[str, int]:
    """Bytes of the float32 model `TransformerModel(cfg)` builds, by part (each part names the field it grows with).

    Counted in closed form, without building anything; a test pins it to a meta-device model's
    parameters and buffers for every kind and option.
    """
    d, f = cfg.d_model, cfg.d_ff
    enc_layers = cfg.n_layers if cfg.has_encoder else 0
    dec_layers = cfg.dec_layers if cfg.has_decoder else 0
    inner, kv_inner = cfg.n_heads * cfg.d_head, cfg.kv_heads * cfg.d_head  # query and key/value widths

    def norm_of(width: int) -> int:
        return width * (2 if cfg.norm == "layer" and cfg.norm_bias else 1)  # RMSNorm: a weight, no bias

    attention = (
        d * (inner + 2 * kv_inner)  # W_Q, W_K, W_V
        + (inner + 2 * kv_inner) * int(cfg.attn_bias)
        + inner * d  # W_O
        + d * int(cfg.attn_out_bias)
        + 2 * norm_of(cfg.d_head) * int(cfg.qk_norm)
    )
    norm = norm_of(d)
    n_ff = 3 if cfg.mlp == "gated" else 2  # (gate,) up, down
    ff = n_ff * d * f + ((n_ff - 1) * f + d) * int(cfg.mlp_bias)
    stacks = int(cfg.has_encoder) + int(cfg.has_decoder)  # each has its own embeddings and final norm
    cross = cfg.kind == "encoder-decoder"
    per_layer_attention = attention + 2 * norm  # self-attention + the attention and ff sublayer norms
    decoder_extra = (attention + norm) if cross else 0  # cross-attention and its sublayer norm
    rows = {"sinusoidal": cfg.max_len, "learned": cfg.max_len + cfg.position_offset}.get(cfg.positional, 0)
    counts = {
        # the sinusoidal table is a buffer (max_len, d_model), learned positions a weight (max_len + offset, d_model);
        # rotary positions have no table, T5's relative ones a (buckets, heads) bias per stack
        "position tables": stacks * (rows * d + cfg.rel_buckets * cfg.n_heads * int(cfg.positional == "relative")),
        "token embedding and LM head": cfg.vocab_size * d * (2 if cfg.has_decoder and not cfg.tie_embeddings else 1)
        + cfg.vocab_size * int(cfg.logits_bias),
        "feed-forward sublayers": (enc_layers + dec_layers) * ff,
        "attention sublayers and norms": (enc_layers + dec_layers) * per_layer_attention
        + dec_layers * decoder_extra
        + stacks * norm * (int(cfg.embed_norm) + int(cfg.has_final_norm)),
        "segment embeddings": stacks * cfg.n_token_types * d,
        "classification head": cfg.n_classes * d + cfg.n_classes if cfg.kind == "encoder" else 0,
    }
    return {part: n * F32 for part, n in counts.items()}


MODEL_PART_FIELDS = {
    "position tables": "max_len",
    "token embedding and LM head": "vocab_size",
    "feed-forward sublayers": "d_ff",
    "attention sublayers and norms": "d_model",
    "segment embeddings": "n_token_types",
    "classification head": "n_classes",
}


def model_bytes(cfg: ModelConfig) -> int:
    """Bytes of the loaded model: float32 weights plus the non-persistent sinusoidal position tables."""
    return sum(model_parts(cfg).values())


# --- a full trace: exactly what `forward(trace=True)` keeps --------------------------------------------------


def _attention_trace(cfg: ModelConfig, n_q: int, n_k: int, rotary: bool = False, bias: bool = False) -> tuple[int, int]:
    """(maps, vectors) bytes of one AttentionTrace: scores, weights (H, Tq, Tk) and the bool mask (1, Tq, Tk);
    q, output (H, Tq, d_head) and k, v (H_kv, Tk, d_head); a rotary one also q and k before the rotation,
    one with a relative position bias that bias (H, Tq, Tk)."""
    q, kv = cfg.n_heads * cfg.d_head, cfg.kv_heads * cfg.d_head
    copies = 2 if rotary else 1
    vectors = (n_q * q * (1 + copies) + n_k * kv * (1 + copies)) * F32
    return (2 + int(bias)) * cfg.n_heads * n_q * n_k * F32 + n_q * n_k * BOOL, vectors


def trace_parts(cfg: ModelConfig, n_src: int, n_tgt: int | None = None) -> dict[str, int]:
    """Bytes of a full trace by part: attention maps, q/k/v/outputs and residual streams, logits and probs.

    n_src: tokens of the text (the encoder's, or a decoder-only model's input); n_tgt: the decoder's
    tokens of an encoder-decoder (default n_src), ignored by the other kinds.
    """
    d = cfg.d_model
    n_tgt = n_src if n_tgt is None else n_tgt
    maps = vectors = 0

    def stack(n: int, n_memory: int | None, n_layers: int) -> None:
        nonlocal maps, vectors
        m, v = _attention_trace(cfg, n, n, rotary=cfg.positional == "rope", bias=cfg.positional == "relative")
        resid = 2  # resid_attn, resid_ff
        if n_memory is not None:
            cm, cv = _attention_trace(cfg, n, n_memory)
            m, v, resid = m + cm, v + cv, 3  # + cross_attn, resid_cross
        maps += n_layers * m
        vectors += n_layers * (v + resid * n * d * F32) + 2 * n * d * F32  # + embed, final

    if cfg.kind == "encoder-decoder":
        stack(n_src, None, cfg.n_layers)
        stack(n_tgt, n_src, cfg.dec_layers)
        outputs = 2 * n_tgt * cfg.vocab_size * F32  # logits, probs: (Tt, vocab)
    elif cfg.kind == "encoder":
        stack(n_src, None, cfg.n_layers)
        # class logits and probs (n_classes,); without a head both are the hidden states (T, d), counted
        # twice as Trace.nbytes counts them (probs is logits then: one tensor)
        outputs = 2 * (cfg.n_classes if cfg.n_classes else n_src * d) * F32
    else:
        stack(n_src, None, cfg.n_layers)
        outputs = 2 * n_src * cfg.vocab_size * F32
    return {"attention maps": maps, "vectors": vectors, "logits and probs": outputs}


def trace_bytes(cfg: ModelConfig, n_src: int, n_tgt: int | None = None) -> int:
    """Bytes of `forward(..., trace=True)`'s Trace for one text, as `Trace.nbytes()` counts them (exactly).

    Trace.nbytes counts numel × element size per named tensor: the broadcast mask at its full
    (Tq, Tk) size and an encoder's probs as well as its logits, so it is an upper bound of what the
    trace holds. While the forward runs it holds at most one layer's masked-scores copy besides.
    """
    return sum(trace_parts(cfg, n_src, n_tgt).values())


def max_trace_tokens(cfg: ModelConfig, budget: Budget) -> int:
    """The longest text (≤ max_len tokens) whose full trace fits budget.trace_bytes; 0 if none does.

    For an encoder-decoder the decoder is taken to be as long as the source (a greedy translation
    is at most max_len tokens); `trace_bytes(cfg, n_src, n_tgt)` checks an actual pair.
    """
    lo, hi = 0, cfg.max_len  # trace_bytes grows with n: the largest n that fits, by bisection
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if trace_bytes(cfg, mid, mid) <= budget.trace_bytes:
            lo = mid
        else:
            hi = mid - 1
    return lo


# --- the light pass: `forward(pool=…)`, a block of queries at a time ---------------------------------------


def _pooled_attention(cfg: ModelConfig, n_q: int, n_k: int, cells: int) -> int:
    """Peak bytes of one `attention.pooled_attention` call: five (H, rows, Tk) blocks (this block's scores,
    masked scores and weights, and the previous block's scores and weights, still referenced) + outputs."""
    rows = min(n_q, query_block_rows(n_q, n_k, cells))
    width = max(cfg.d_model, cfg.n_heads * cfg.d_head)
    return 5 * cfg.n_heads * rows * n_k * F32 + 2 * n_q * width * F32  # + the output blocks and their cat


def light_pass_bytes(cfg: ModelConfig, n_src: int, n_tgt: int | None = None, cells: int = LIGHT_PASS_CELLS) -> int:
    """An upper bound of the bytes `forward(pool=cells)` allocates at its peak for one text (a test measures it).

    Per layer: the residual stream and its copies (≤ 12 × d_model per token), the feed-forward hidden
    layer (≤ 3 × d_ff per token: a gated one holds gate, up and their product) and the pooled attention's
    blocks; across layers the pooled maps; then the causal mask (Tt × Tt bool), the big one at long lengths.
    An LM's logits are never made: the light pass skips the head.
    """
    n_tgt = n_src if n_tgt is None else n_tgt
    d, f = cfg.d_model, cfg.d_ff
    width = max(d, cfg.n_heads * cfg.d_head)  # the residual stream or the heads side by side, whichever is wider

    def stack(n: int, n_memory: int | None, causal: bool, n_layers: int) -> int:
        attention = _pooled_attention(cfg, n, n, cells)
        pooled = min(n, cells) ** 2
        if n_memory is not None:
            attention += _pooled_attention(cfg, n, n_memory, cells)
            pooled += min(n, cells) * min(n_memory, cells)
        pooled_all = 2 * n_layers * cfg.n_heads * pooled * F32  # every layer's maps, then stacked
        bias = cfg.n_heads * n * n * F32 * int(cfg.positional == "relative")  # the stack's relative position bias
        return n * (12 * width + 3 * f) * F32 + attention + pooled_all + bias + (n * n * BOOL if causal else 0)

    if cfg.kind == "encoder-decoder":
        memory = n_src * d * F32  # the encoder's output, held through the decoder
        return max(stack(n_src, None, False, cfg.n_layers), memory + stack(n_tgt, n_src, True, cfg.dec_layers))
    if cfg.kind == "encoder":
        return stack(n_src, None, False, cfg.n_layers) + (cfg.n_classes if cfg.n_classes else n_src * d) * F32
    return stack(n_src, None, True, cfg.n_layers)


# --- the judgement --------------------------------------------------------------------------------------------


def check_fields(cfg: ModelConfig) -> None:
    """Raise BudgetError unless every size field is an integer within FIELD_CAPS."""
    for field, cap in FIELD_CAPS.items():
        value = getattr(cfg, field)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise BudgetError(field, f"config.{field} must be a non-negative integer, got {value!r}")
        if value > cap:
            raise BudgetError(field, f"config.{field} is {value:,}: more than the {cap:,} this app accepts")


def check_config(cfg: ModelConfig, budget: Budget) -> None:
    """Raise BudgetError naming the field unless a model of this config, and its traces, fit `budget`.

    The rules are in the module docstring. Pure arithmetic: nothing is allocated.
    """
    check_fields(cfg)
    parts = model_parts(cfg)
    total = sum(parts.values())
    if total > budget.model_bytes:
        part = max(parts, key=parts.get)
        field = MODEL_PART_FIELDS[part]
        also = f" with config.n_layers {cfg.n_layers}" if field == "d_model" else ""
        raise BudgetError(
            field,
            f"config.{field} is {getattr(cfg, field):,}{also}: the {part} alone would take {format_bytes(parts[part])}, "
            f"the whole model {format_bytes(total)} (this server's limit for one model is {format_bytes(budget.model_bytes)})",
        )
    n = min(cfg.max_len, MIN_TRACE_TOKENS)
    tparts = trace_parts(cfg, n, n)
    if sum(tparts.values()) > budget.trace_bytes:
        part = max(tparts, key=tparts.get)
        field = {"attention maps": "n_heads", "vectors": "d_model", "logits and probs": "vocab_size"}[part]
        also = f" with config.n_layers {cfg.n_layers}" if field == "n_heads" else ""
        raise BudgetError(
            field,
            f"config.{field} is {getattr(cfg, field):,}{also}: a full trace of only {n} tokens would take "
            f"{format_bytes(sum(tparts.values()))}, {format_bytes(tparts[part])} of it {part} "
            f"(this server's limit for one trace is {format_bytes(budget.trace_bytes)})",
        )
    light = light_pass_bytes(cfg, cfg.max_len)
    if light > budget.trace_bytes:
        raise BudgetError(
            "max_len",
            f"config.max_len is {cfg.max_len:,}: even the light pass over a text of that length (the model view's) "
            f"would take {format_bytes(light)} (this server's limit for one trace is {format_bytes(budget.trace_bytes)})",
        )


__all__ = [
    "Budget",
    "BudgetError",
    "FIELD_CAPS",
    "MIN_TRACE_TOKENS",
    "check_config",
    "check_fields",
    "default_budget",
    "format_bytes",
    "light_pass_bytes",
    "max_trace_tokens",
    "model_bytes",
    "model_parts",
    "trace_bytes",
    "trace_parts",
]
