"""The three model kinds (encoder-decoder, encoder classifier, decoder LM) built from one config."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transformer.model.attention import HeadAblation
from transformer.model.config import ModelConfig
from transformer.model.layers import DecoderLayer, EncoderLayer, decoder_layer_step
from transformer.model.norms import make_norm
from transformer.model.positions import RelativeBias, sinusoidal_table
from transformer.model.rope import cos_sin
from transformer.model.trace import KIND_PATHS, StackTrace, Trace


class Embeddings(nn.Module):
    """Adds position encoding (+ segment embedding) to token vectors, optionally normalised.

    The token embedding itself lives on the model: encoder, decoder and a tied LM head share it.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.positional == "learned":  # rows before position_offset are in the table, never read
            self.positions = nn.Embedding(cfg.max_len + cfg.position_offset, cfg.d_model)
        elif cfg.positional == "sinusoidal":
            self.register_buffer("pe", position_table(cfg), persistent=False)
        # rope, relative: nothing added here; the layers' attention turns q and k, or biases the scores, by position
        self.token_types = nn.Embedding(cfg.n_token_types, cfg.d_model) if cfg.n_token_types else None
        self.norm = make_norm(cfg) if cfg.embed_norm else None
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, token_type_ids: Tensor | None = None, start: int = 0) -> Tensor:
        """x: (B, T, d_model) token vectors, straight from the embedding table, of positions start … start + T − 1."""
        T = x.shape[1]
        if start + T > self.cfg.max_len:
            raise ValueError(f"sequence of {start + T} tokens is longer than the model's max_len ({self.cfg.max_len})")
        if self.cfg.scale_embeddings:
            x = x * math.sqrt(self.cfg.d_model)
        if self.cfg.positional == "learned":
            x = x + self.positions(torch.arange(start, start + T, device=x.device) + self.cfg.position_offset)
        elif self.cfg.positional == "sinusoidal":
            x = x + self.pe[start : start + T]
        if self.token_types is not None:
            types = x.new_zeros(x.shape[:2], dtype=torch.long) if token_type_ids is None else token_type_ids
            x = x + self.token_types(types)
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(x)


def position_table(cfg: ModelConfig) -> Tensor:
    """The sinusoidal rows of positions position_offset … position_offset + max_len − 1, in the config's layout."""
    return sinusoidal_table(cfg.max_len, cfg.d_model, cfg.sinusoidal_layout, cfg.position_offset)


class Encoder(nn.Module):
    """A stack of encoder layers over the source."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed = Embeddings(cfg)
        self.rel_bias = RelativeBias(cfg, bidirectional=True) if cfg.positional == "relative" else None
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_layers))
        self.final_norm = make_norm(cfg) if cfg.has_final_norm else None

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None,
        token_type_ids: Tensor | None = None,
        trace: bool = False,
        pool: int | None = None,
        ablate: HeadAblation | None = None,
    ):
        x = embed = self.embed(x, token_type_ids)
        rope = cos_sin(self.embed.cfg, x.shape[1], x.device) if self.embed.cfg.positional == "rope" else None
        bias = None if self.rel_bias is None else self.rel_bias(x.shape[1], x.shape[1])
        layer_traces = []
        for i, layer in enumerate(self.layers):
            knockout = None if ablate is None else ablate.at("encoder self", i)
            x, lt = layer(x, mask, trace=trace, pool=pool, ablate=knockout, rope=rope, bias=bias)
            layer_traces.append(lt)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x, _stack_result(embed, layer_traces, x, trace, pool)


class Decoder(nn.Module):
    """A stack of decoder layers: causal self-attention, plus cross-attention when there is an encoder."""

    def __init__(self, cfg: ModelConfig, cross: bool):
        super().__init__()
        self.embed = Embeddings(cfg)
        self.rel_bias = RelativeBias(cfg, bidirectional=False) if cfg.positional == "relative" else None
        self.layers = nn.ModuleList(DecoderLayer(cfg, cross) for _ in range(cfg.dec_layers))
        self.final_norm = make_norm(cfg) if cfg.has_final_norm else None

    def forward(
        self,
        x,
        self_mask,
        memory=None,
        cross_mask=None,
        trace: bool = False,
        pool: int | None = None,
        ablate: HeadAblation | None = None,
    ):
        x = embed = self.embed(x)
        cfg = self.embed.cfg
        rope = cos_sin(cfg, x.shape[1], x.device) if cfg.positional == "rope" else None
        windowed = None if not cfg.sliding_window else self_mask & window_mask(x.shape[1], cfg.sliding_window, x.device)
        bias = None if self.rel_bias is None else self.rel_bias(x.shape[1], x.shape[1])
        layer_traces = []
        for i, layer in enumerate(self.layers):
            knockouts = (None, None) if ablate is None else (ablate.at("decoder self", i), ablate.at("cross", i))
            mask = windowed if cfg.window_of(i) else self_mask
            x, lt = layer(
                x,
                mask,
                memory,
                cross_mask,
                trace=trace,
                pool=pool,
                ablate=knockouts[0],
                cross_ablate=knockouts[1],
                rope=rope,
                bias=bias,
            )
            layer_traces.append(lt)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x, _stack_result(embed, layer_traces, x, trace, pool)


def decoder_step(decoder: Decoder, x: Tensor, position: int, memory: Tensor, cross_mask: Tensor | None, cache, ablate):
    """`Decoder.forward` for the one new token x (B, 1, d_model) at `position`, reading and extending `cache`."""
    x = decoder.embed(x, start=position)
    bias = None if decoder.rel_bias is None else decoder.rel_bias(1, position + 1, first_query=position)
    kept = []
    for i, layer in enumerate(decoder.layers):
        knockouts = (None, None) if ablate is None else (ablate.at("decoder self", i), ablate.at("cross", i))
        x, past = decoder_layer_step(layer, x, None if cache is None else cache[i], memory, cross_mask, bias, *knockouts)
        kept.append(past)
    if decoder.final_norm is not None:
        x = decoder.final_norm(x)
    return x, tuple(kept)


def _stack_result(embed: Tensor, layers: list, final: Tensor, trace: bool, pool: int | None):
    """What a stack returns besides its output: a StackTrace, the layers' pooled-weight dicts, or None."""
    if trace:
        return StackTrace(embed.detach(), tuple(layers), final.detach())
    return layers if pool is not None else None


def padding_mask(keep: Tensor | None, n_queries: int) -> Tensor | None:
    """(B, Tk) bool of real tokens -> (B, 1, Tq, Tk) attention mask; None when nothing is padded."""
    if keep is None or bool(keep.all()):
        return None
    return keep[:, None, None, :].expand(-1, 1, n_queries, -1)


def window_mask(T: int, window: int, device) -> Tensor:
    """(1, 1, T, T): query i may look at keys j with i − j < window (Mistral's sliding window; with the causal mask)."""
    i = torch.arange(T, device=device)
    return (i[:, None] - i[None, :] < window)[None, None]


def causal_mask(T: int, keep: Tensor | None, device) -> Tensor:
    """(B or 1, 1, T, T): query i may look at keys j <= i that are real tokens."""
    mask = torch.ones(T, T, dtype=torch.bool, device=device).tril()[None, None]  # (1, 1, T, T)
    if keep is not None:
        mask = mask & keep[:, None, None, :]
    return mask


class TransformerModel(nn.Module):
    """Encoder-decoder (translation), encoder with a classification head, or decoder-only LM.

    forward() returns logits and, when asked with `trace=True`, a `Trace` of every layer and head.
    Nothing is stored on the modules during forward.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.encoder = Encoder(cfg) if cfg.has_encoder else None
        self.decoder = Decoder(cfg, cross=cfg.has_encoder) if cfg.has_decoder else None
        if cfg.has_decoder and not cfg.tie_embeddings:
            self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        elif cfg.n_classes:
            self.classifier = nn.Linear(cfg.d_model, cfg.n_classes)
        if cfg.logits_bias:
            self.logits_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.apply(self._init)

    @classmethod
    def from_weights(cls, cfg: ModelConfig, state: dict[str, Tensor]) -> TransformerModel:
        """A model holding `state`'s tensors (as float32), built on the meta device first: a loaded model never
        allocates a second, random set of weights beside the file's (half the peak memory of a large model)."""
        with torch.device("meta"):
            model = cls(cfg)
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
        for stack in (model.encoder, model.decoder):  # the one buffer no file stores: the sinusoidal table
            if stack is not None and cfg.positional == "sinusoidal":
                stack.embed.pe = position_table(cfg)
        return model

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    @property
    def device(self) -> torch.device:
        return self.tok_embed.weight.device

    def encode(
        self,
        ids: Tensor,
        keep: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        trace: bool = False,
        pool: int | None = None,
        ablate: HeadAblation | None = None,
    ):
        """ids: (B, Ts); keep: (B, Ts) bool, False at padding. Returns (memory (B, Ts, d), StackTrace|None)."""
        mask = padding_mask(keep, ids.shape[1])
        return self.encoder(self.tok_embed(ids), mask, token_type_ids, trace=trace, pool=pool, ablate=ablate)

    def decode(
        self,
        ids: Tensor,
        memory: Tensor | None = None,
        keep: Tensor | None = None,
        memory_keep: Tensor | None = None,
        trace: bool = False,
        pool: int | None = None,
        ablate: HeadAblation | None = None,
    ):
        """ids: (B, Tt) decoder input; memory: encoder output. Returns (hidden (B, Tt, d), StackTrace|None)."""
        Tt = ids.shape[1]
        cross_mask = padding_mask(memory_keep, Tt) if memory is not None else None
        self_mask = causal_mask(Tt, keep, ids.device)
        return self.decoder(self.tok_embed(ids), self_mask, memory, cross_mask, trace=trace, pool=pool, ablate=ablate)

    def decode_step(
        self,
        ids: Tensor,
        position: int,
        memory: Tensor,
        memory_keep: Tensor | None = None,
        cache: tuple | None = None,
        ablate: HeadAblation | None = None,
    ) -> tuple[Tensor, tuple]:
        """One greedy step of an encoder-decoder: the decoder's hidden state (B, 1, d) for the new token ids (B, 1)
        at `position`, and the cache to pass to the next step (every layer's keys and values so far).

        Equal to `decode` on the whole prefix, up to float rounding, at a cost that does not grow with the prefix's
        square. The cache belongs to the caller: nothing is kept on the model.
        """
        cross_mask = padding_mask(memory_keep, 1)
        return decoder_step(self.decoder, self.tok_embed(ids), position, memory, cross_mask, cache, ablate)

    def lm_logits(self, hidden: Tensor) -> Tensor:
        """(B, T, d_model) -> (B, T, vocab); a tied head reuses the token embedding matrix.

        T5 scales the decoder's output by d_model^-0.5 first (head_scale); BART adds a bias to the logits.
        """
        if self.cfg.head_scale != 1.0:
            hidden = hidden * self.cfg.head_scale
        weight = self.tok_embed.weight if self.cfg.tie_embeddings else self.lm_head.weight
        return F.linear(hidden, weight, self.logits_bias if self.cfg.logits_bias else None)

    def forward(
        self,
        input_ids: Tensor,
        decoder_input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        trace: bool = False,
        pool: int | None = None,
        ablate: HeadAblation | None = None,
    ) -> tuple[Tensor, Trace | dict[str, Tensor] | None]:
        """Run the model. Masks are (B, T) with 1/True at real tokens; None means no padding.

        trace=True: also return a `Trace` of every intermediate. pool=N (without trace): logits None (an LM's
        head is skipped: at 2048 tokens of a 150 000-word vocabulary it is the pass's largest tensor), and return
        every head's attention weights block-max pooled to at most N × N, never holding a full
        (Tq, Tk) map: {kind: (n_layers, B, H, rows, cols)}, e.g. {"encoder self": ...} (the model view's light pass).
        ablate: a `HeadAblation`, heads whose output is replaced by zeros or a mean, each batch row
        its own set (None: every head runs; works with trace and pool).

        encoder-decoder: input_ids is the source, decoder_input_ids the target so far (starting with BOS).
        encoder: logits are class logits (B, n_classes) from the first token, or hidden states if no head.
        decoder: input_ids are the tokens; logits (B, T, vocab) predict each next token.
        """
        keep = None if attention_mask is None else attention_mask.bool()
        enc_trace = dec_trace = None
        kind = self.cfg.kind
        light = pool is not None and not trace  # the model view's pass: only pooled maps come back, no logits
        if kind == "encoder-decoder":
            if decoder_input_ids is None:
                raise ValueError("an encoder-decoder needs decoder_input_ids (the target, starting with BOS)")
            memory, enc_trace = self.encode(input_ids, keep, trace=trace, pool=pool, ablate=ablate)
            dec_keep = None if decoder_attention_mask is None else decoder_attention_mask.bool()
            hidden, dec_trace = self.decode(decoder_input_ids, memory, dec_keep, keep, trace=trace, pool=pool, ablate=ablate)
            logits = None if light else self.lm_logits(hidden)  # (B, Tt, vocab)
        elif kind == "encoder":
            hidden, enc_trace = self.encode(input_ids, keep, token_type_ids, trace=trace, pool=pool, ablate=ablate)
            logits = self.classifier(hidden[:, 0]) if self.cfg.n_classes else hidden  # (B, C) from the first token
        else:
            hidden, dec_trace = self.decode(input_ids, keep=keep, trace=trace, pool=pool, ablate=ablate)
            logits = None if light else self.lm_logits(hidden)  # (B, T, vocab)
        if not trace and pool is not None:
            stacks = {"encoder": enc_trace, "decoder": dec_trace}
            return logits, {
                kind: torch.stack([layer[sub] for layer in stacks[stack]])
                for kind, (stack, sub) in KIND_PATHS.items()
                if stacks[stack] and stacks[stack][0][sub] is not None
            }
        if not trace:
            return logits, None
        logits = logits.detach()
        probs = logits.softmax(-1) if (kind != "encoder" or self.cfg.n_classes) else logits
        return logits, Trace(encoder=enc_trace, decoder=dec_trace, logits=logits, probs=probs)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
