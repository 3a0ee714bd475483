"""The model's configuration: one frozen dataclass that fully describes an architecture."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

KINDS = ("encoder-decoder", "encoder", "decoder")
POSITIONALS = ("sinusoidal", "learned", "rope", "relative")  # relative: T5's bucketed bias on the scores
SINUSOIDAL_LAYOUTS = ("interleaved", "split", "fairseq")  # ours (the paper's); Marian's [sin | cos]; M2M-100's
ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu")
NORMS = ("layer", "rms", "rms_plus_one")  # LayerNorm; RMSNorm x·w (Llama); RMSNorm x·(1 + w) (Gemma)
MLPS = ("plain", "gated")  # down(act(up x)); down(act(gate x) ⊙ up x): SwiGLU with silu, GeGLU with gelu
ROPE_SCALINGS = ("default", "linear", "dynamic", "llama3")


class ConfigError(ValueError):
    """A configuration that cannot describe a working model."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a model; saved as JSON inside every checkpoint."""

    kind: str = "encoder-decoder"  # "encoder-decoder" | "encoder" (classifier) | "decoder" (LM)
    vocab_size: int = 1000  # one vocabulary shared by source and target
    n_layers: int = 2  # layers in the encoder and (separately) in the decoder
    n_heads: int = 4
    d_model: int = 128
    d_ff: int = 512  # hidden width of the feed-forward sublayer
    dropout: float = 0.0
    max_len: int = 512  # longest sequence the positional encoding covers
    positional: str = "sinusoidal"  # "sinusoidal" (Vaswani et al.) or "learned"
    norm_first: bool = True  # pre-LN (True) or post-LN as in the original paper (False)
    tie_embeddings: bool = True  # the LM head reuses the token embedding matrix
    n_classes: int = 0  # encoder kind: size of the classification head (0: no head)
    activation: str = "relu"  # "relu" | "gelu" (erf) | "gelu_tanh" (GPT-2's gelu_new)
    layer_norm_eps: float = 1e-5
    scale_embeddings: bool = True  # multiply token embeddings by sqrt(d_model), as the paper does
    embed_norm: bool = False  # LayerNorm right after the embeddings (BERT)
    n_token_types: int = 0  # BERT's segment embeddings (0: none)
    final_norm: bool | None = None  # LayerNorm after the last layer; None means "iff pre-LN"
    pad_id: int = 0
    class_names: tuple[str, ...] = ()  # encoder kind: a display name per class
    # --- what modern decoders (Llama, Mistral, Qwen, Gemma, Pythia, Phi) add; the defaults are the paper's model
    n_kv_heads: int = 0  # key/value heads shared by groups of query heads (GQA; 1: MQA); 0 means n_heads
    head_dim: int = 0  # width of each head; 0 means d_model // n_heads
    norm: str = "layer"  # "layer" | "rms" | "rms_plus_one" (Gemma's x·(1 + w))
    norm_bias: bool = True  # LayerNorm has a bias (nanoGPT's bias=False leaves it out)
    qk_norm: bool = False  # RMSNorm each head's q and k before the rotation (Qwen3)
    mlp: str = "plain"  # "plain" | "gated" (SwiGLU / GeGLU)
    attn_bias: bool = True  # the q, k, v projections have a bias
    attn_out_bias: bool = True  # the output projection W_O has a bias
    mlp_bias: bool = True
    parallel_residual: bool = False  # x + attn(norm₁ x) + mlp(norm₂ x) in one step (GPT-NeoX, Pythia)
    sliding_window: int = 0  # a query sees only the last `sliding_window` keys (itself included); 0: no window
    full_attention_layers: tuple[int, ...] = ()  # layers that ignore the window (Qwen2's lower layers)
    rope_theta: float = 10000.0  # rotary positions: the base of the wavelengths
    rotary_fraction: float = 1.0  # the leading fraction of each head's dims that is rotated (Pythia: 0.25)
    rope_scaling: str = "default"  # "default" | "linear" | "dynamic" (NTK) | "llama3"
    rope_factor: float = 1.0  # the scaling's factor (linear, dynamic, llama3)
    rope_low_freq_factor: float = 1.0  # llama3
    rope_high_freq_factor: float = 4.0  # llama3
    rope_original_max_len: int = 0  # llama3: the context the frequencies were trained for; dynamic: where scaling starts
    # --- what real encoder-decoders (T5, BART, mBART, Marian, M2M-100) add; the defaults are the paper's model
    n_decoder_layers: int = 0  # encoder-decoder: the decoder's depth; 0 means n_layers (the encoder's)
    scale_scores: bool = True  # divide q·k by √d_head; T5 does not (its init folds the scale into W_Q)
    rel_buckets: int = 32  # positional="relative": T5's buckets of relative distance, one learned bias per bucket and head
    rel_max_distance: int = 128  # distances past this share the last bucket
    sinusoidal_layout: str = "interleaved"  # sin at even, cos at odd dims; "split": [sin | cos] (Marian); "fairseq" (M2M-100)
    position_offset: int = 0  # the first token's position index: BART's learned table starts at row 2, M2M-100's at pad + 1
    logits_bias: bool = False  # a bias on the LM logits (BART's final_logits_bias)
    head_scale: float = 1.0  # the decoder's output × head_scale before the LM head (T5's tied head: d_model^-0.5)

    def __post_init__(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        check(self.kind in KINDS, f"kind must be one of {KINDS}, got {self.kind!r}")
        check(self.positional in POSITIONALS, f"positional must be one of {POSITIONALS}, got {self.positional!r}")
        check(self.activation in ACTIVATIONS, f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        for name in ("vocab_size", "n_layers", "n_heads", "d_model", "d_ff", "max_len"):
            value = getattr(self, name)
            check(
                isinstance(value, int) and not isinstance(value, bool) and value > 0,
                f"{name} must be a positive integer, got {value!r}",
            )
        check(self.norm in NORMS, f"norm must be one of {NORMS}, got {self.norm!r}")
        check(self.mlp in MLPS, f"mlp must be one of {MLPS}, got {self.mlp!r}")
        check(
            self.rope_scaling in ROPE_SCALINGS,
            f"rope_scaling must be one of {ROPE_SCALINGS}, got {self.rope_scaling!r}",
        )
        for name in ("n_kv_heads", "head_dim", "sliding_window", "rope_original_max_len"):
            value = getattr(self, name)
            check(
                isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                f"{name} must be a non-negative integer, got {value!r}",
            )
        check(
            self.head_dim > 0 or self.d_model % self.n_heads == 0,
            f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}), or head_dim given",
        )
        check(
            self.n_heads % self.kv_heads == 0,
            f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})",
        )
        if self.positional == "rope":
            check(self.rope_theta > 0, f"rope_theta must be positive, got {self.rope_theta}")
            check(0.0 < self.rotary_fraction <= 1.0, f"rotary_fraction must be in (0, 1], got {self.rotary_fraction}")
            check(
                self.rotary_dim >= 2 and self.rotary_dim % 2 == 0,
                f"rotary_fraction {self.rotary_fraction} of head_dim {self.d_head} rotates {self.rotary_dim} dims: "
                "need an even number ≥ 2",
            )
            check(self.rope_factor >= 1.0, f"rope_factor must be ≥ 1, got {self.rope_factor}")
            check(
                self.rope_scaling not in ("dynamic", "llama3") or self.rope_original_max_len > 0,
                f"rope_scaling {self.rope_scaling!r} needs rope_original_max_len",
            )
            check(
                self.rope_scaling != "llama3" or self.rope_high_freq_factor > self.rope_low_freq_factor > 0,
                "llama3 rope scaling needs rope_high_freq_factor > rope_low_freq_factor > 0",
            )
        for name in ("n_decoder_layers", "position_offset"):
            value = getattr(self, name)
            check(
                isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                f"{name} must be a non-negative integer, got {value!r}",
            )
        check(
            self.sinusoidal_layout in SINUSOIDAL_LAYOUTS,
            f"sinusoidal_layout must be one of {SINUSOIDAL_LAYOUTS}, got {self.sinusoidal_layout!r}",
        )
        check(
            self.sinusoidal_layout != "fairseq" or self.d_model >= 4,
            f"the fairseq sinusoid needs d_model ≥ 4, got {self.d_model}",
        )
        if self.positional == "relative":
            check(
                isinstance(self.rel_buckets, int) and self.rel_buckets >= 4 and isinstance(self.rel_max_distance, int),
                f"rel_buckets must be an integer ≥ 4, got {self.rel_buckets!r}",
            )
            # T5's buckets: half exact distances, half logarithmic from there up to rel_max_distance
            check(
                self.rel_max_distance > self.rel_buckets // 2,
                f"rel_max_distance ({self.rel_max_distance}) must exceed half of rel_buckets ({self.rel_buckets})",
            )
        check(self.head_scale > 0, f"head_scale must be positive, got {self.head_scale}")
        check(
            self.n_decoder_layers == 0 or self.kind == "encoder-decoder",
            f"n_decoder_layers is for encoder-decoders (kind={self.kind!r}: set n_layers)",
        )
        check(
            all(isinstance(i, int) and 0 <= i < self.n_layers for i in self.full_attention_layers),
            f"full_attention_layers must be layer numbers below {self.n_layers}, got {list(self.full_attention_layers)}",
        )
        check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        check(self.layer_norm_eps > 0, f"layer_norm_eps must be positive, got {self.layer_norm_eps}")
        check(0 <= self.pad_id < self.vocab_size, f"pad_id {self.pad_id} is outside the vocabulary (size {self.vocab_size})")
        check(self.n_classes >= 0 and self.n_token_types >= 0, "n_classes and n_token_types must be >= 0")
        check(
            self.n_classes == 0 or self.kind == "encoder",
            f"only the encoder kind has a classification head (n_classes={self.n_classes}, kind={self.kind!r})",
        )
        check(
            not self.class_names or len(self.class_names) == self.n_classes,
            f"class_names has {len(self.class_names)} names for {self.n_classes} classes",
        )
        # Normalise JSON lists back into a hashable tuple.
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "full_attention_layers", tuple(self.full_attention_layers))

    @property
    def d_head(self) -> int:
        return self.head_dim or self.d_model // self.n_heads

    @property
    def dec_layers(self) -> int:
        """The decoder's depth: the encoder's unless an encoder-decoder says otherwise."""
        return self.n_decoder_layers or self.n_layers

    def layers_of(self, kind: str) -> int:
        """How many layers compute attention `kind` ("encoder self", "decoder self", "cross")."""
        return self.n_layers if kind == "encoder self" or self.kind == "decoder" else self.dec_layers

    @property
    def kv_heads(self) -> int:
        """Key/value heads: n_heads unless grouped-query (fewer) or multi-query (one)."""
        return self.n_kv_heads or self.n_heads

    @property
    def group_size(self) -> int:
        """Query heads that share one key/value head."""
        return self.n_heads // self.kv_heads

    @property
    def rotary_dim(self) -> int:
        """How many of each head's dims rotary positions turn (0 without RoPE)."""
        return int(self.d_head * self.rotary_fraction) if self.positional == "rope" else 0

    def window_of(self, layer: int) -> int:
        """The sliding window of `layer`'s self-attention, 0 for full attention."""
        return 0 if layer in self.full_attention_layers else self.sliding_window

    @property
    def has_final_norm(self) -> bool:
        return self.norm_first if self.final_norm is None else self.final_norm

    @property
    def has_encoder(self) -> bool:
        return self.kind in ("encoder-decoder", "encoder")

    @property
    def has_decoder(self) -> bool:
        return self.kind in ("encoder-decoder", "decoder")

    @property
    def attention_kinds(self) -> tuple[str, ...]:
        """The attention kinds this architecture computes, in display order."""
        return {
            "encoder-decoder": ("encoder self", "decoder self", "cross"),
            "encoder": ("encoder self",),
            "decoder": ("decoder self",),
        }[self.kind]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> ModelConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as e:  # e.g. a field with the wrong type that breaks a comparison
            raise ConfigError(f"invalid config: {e}") from e

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config is not valid JSON: {e}") from e
        return cls.from_dict(data)
