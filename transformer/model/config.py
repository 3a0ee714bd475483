"""The model's configuration: one frozen dataclass that fully describes an architecture."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

KINDS = ("encoder-decoder", "encoder", "decoder")
POSITIONALS = ("sinusoidal", "learned")
ACTIVATIONS = ("relu", "gelu", "gelu_tanh")


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
        check(
            self.d_model % self.n_heads == 0,
            f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})",
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

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

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
