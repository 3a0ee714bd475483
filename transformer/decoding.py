"""How an encoder-decoder starts, steers and stops its greedy output, as the model's own `generate` would.

Our toy translators start the decoder with [BOS] and stop at [EOS]. Real ones carry more rules in their
config.json / generation_config.json: T5 starts with <pad>, Marian with its pad token, BART and M2M-100
with </s>; mBART-50 and M2M-100 then force a target-language token, BART forces <s>; some ban tokens
(Marian bans <pad>), forbid repeated n-grams (BART-CNN: 3) or hold EOS back until a minimum length.
`Decoding` holds those rules and `Decoding.process` applies them to one step's logits exactly as
transformers' greedy `generate(num_beams=1, do_sample=False)` does (the same processors, the same order),
so our greedy output is its output, token for token.

Lengths count the decoder's tokens including the start token, as transformers' max_length and min_length do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

NEG_INF = float("-inf")
# the settings Decoding reads; anything else in a generation config that changes greedy output is listed by name
GREEDY_SETTINGS = (
    "decoder_start_token_id", "bos_token_id", "eos_token_id", "forced_bos_token_id", "forced_eos_token_id",
    "max_length", "max_new_tokens", "min_length", "min_new_tokens", "no_repeat_ngram_size", "bad_words_ids",
    "suppress_tokens", "begin_suppress_tokens", "repetition_penalty",
)  # fmt: skip
# settings that would change greedy output and that we do not apply: the Checkpoint page names them
UNSUPPORTED = (
    "sequence_bias", "encoder_repetition_penalty", "encoder_no_repeat_ngram_size", "exponential_decay_length_penalty",
    "guidance_scale", "renormalize_logits", "remove_invalid_values", "stop_strings", "forced_decoder_ids",
)  # fmt: skip
MAX_LIST = 10_000  # a generation config's token lists are a few dozen ids; more is not a config
DEFAULT_NEW_TOKENS = 20  # transformers' generate stops after this many new tokens when a model sets no max_length


class DecodingError(ValueError):
    """Generation settings that cannot describe a decoder's start and stop."""


@dataclass(frozen=True)
class Decoding:
    """The decoder's start token, its end tokens, and the rules greedy decoding applies at each step."""

    start: int  # the decoder's first input (decoder_start_token_id)
    eos: tuple[int, ...]  # any of these ends the output
    forced_bos: int | None = None  # the token forced at the first free step (a target language, BART's <s>)
    forced_eos: tuple[int, ...] = ()  # forced at the last step max_length allows
    max_length: int | None = None  # the longest decoder sequence, start included (None: the model's max_len)
    min_length: int = 0  # EOS is held back while the sequence is shorter (start included)
    no_repeat_ngram_size: int = 0  # a token that would repeat an n-gram already in the output is banned
    bad_words: tuple[tuple[int, ...], ...] = ()  # token sequences never completed (one-token ones never chosen)
    suppress: tuple[int, ...] = ()  # never chosen
    begin_suppress: tuple[int, ...] = ()  # not chosen at the first free step
    repetition_penalty: float = 1.0  # > 1 lowers the logits of tokens already in the output (CTRL's rule)
    default_length: bool = False  # max_length is transformers' default (DEFAULT_NEW_TOKENS new tokens), not the model's
    ignored: tuple[str, ...] = field(default=(), compare=False)  # settings in the file that we do not apply

    @classmethod
    def plain(cls, bos_id: int, eos_id: int) -> Decoding:
        """Our own translators: start with [BOS], stop at [EOS], nothing else."""
        return cls(start=bos_id, eos=(eos_id,))

    @property
    def prefix(self) -> tuple[int, ...]:
        """The decoder's ids before its first free choice: the start token, and the forced BOS when there is one."""
        return (self.start,) if self.forced_bos is None else (self.start, self.forced_bos)

    @property
    def end(self) -> int:
        """The token a finished target ends with (what the last position of a given target should predict)."""
        return self.eos[0]

    def limit(self, max_len: int, max_new_tokens: int | None = None) -> int:
        """The longest decoder sequence (start included) for a model of `max_len` positions; `max_new_tokens`, when
        given, replaces the settings' max_length, as it does in generate."""
        if max_new_tokens is not None:
            return min(max_len, 1 + max_new_tokens)
        return max_len if self.max_length is None else min(self.max_length, max_len)

    def process(self, ids: Tensor, logits: Tensor, max_length: int) -> Tensor:
        """One step's logits (B, V) after the rules, for decoder sequences `ids` (B, L) of max_length at most.

        The order is transformers' (repetition penalty, n-grams, bad words, min length, forced BOS, forced EOS,
        suppressed tokens); the argmax of the result is the next token.
        """
        scores = logits.clone()
        cur = ids.shape[1]
        if self.repetition_penalty != 1.0:
            seen = scores.gather(1, ids)
            scores.scatter_(1, ids, torch.where(seen < 0, seen * self.repetition_penalty, seen / self.repetition_penalty))
        if self.no_repeat_ngram_size and cur + 1 >= self.no_repeat_ngram_size:
            for row, banned in enumerate(_repeated_ngram_ends(ids.tolist(), self.no_repeat_ngram_size)):
                scores[row, banned] = NEG_INF
        if self.bad_words:
            for row, seq in enumerate(ids.tolist()):
                banned = [w[-1] for w in self.bad_words if len(w) == 1 or seq[len(seq) - len(w) + 1 :] == list(w[:-1])]
                scores[row, banned] = NEG_INF
        if cur < self.min_length:
            scores[:, list(self.eos)] = NEG_INF
        if self.forced_bos is not None and cur == 1:
            scores[:] = NEG_INF
            scores[:, self.forced_bos] = 0
        if self.forced_eos and cur == max_length - 1:
            scores[:] = NEG_INF
            scores[:, list(self.forced_eos)] = 0
        if self.suppress:
            scores[:, list(self.suppress)] = NEG_INF
        if self.begin_suppress and cur == len(self.prefix):
            scores[:, list(self.begin_suppress)] = NEG_INF
        return scores

    def describe(self, token: Callable[[int], str], max_len: int) -> str:
        """The rules in words, for the Checkpoint page: "starts with <pad>, then de_DE; ends at </s>; ...".

        token: an id's token text (the tokenizer's). max_len: the model's, which caps every length here.
        """
        start = f"starts with {token(self.start)}" + (
            "" if self.forced_bos is None else f", then {token(self.forced_bos)} (forced)"
        )
        parts = [start, "ends at " + " or ".join(token(t) for t in self.eos)]
        limit = self.limit(max_len) - 1
        default = " (transformers' default: the model sets no max_length)" if self.default_length else ""
        parts.append(f"at most {limit} tokens after the start{default}")
        if self.min_length > len(self.prefix):
            parts.append(f"no end before {self.min_length - 1} tokens")
        if self.no_repeat_ngram_size:
            parts.append(f"never repeats a {self.no_repeat_ngram_size}-gram")
        banned = [" ".join(token(t) for t in w) for w in self.bad_words] + [token(t) for t in self.suppress]
        if banned:
            parts.append("never writes " + ", ".join(banned[:5]) + (" …" if len(banned) > 5 else ""))
        if self.forced_eos:
            parts.append(f"forced to end with {token(self.forced_eos[0])} at the last step")
        if self.repetition_penalty != 1.0:
            parts.append(f"repetition penalty {self.repetition_penalty:g}")
        if self.ignored:
            parts.append(f"not applied here: {', '.join(self.ignored)}")
        return "; ".join(parts)

    def to_facts(self) -> dict[str, Any]:
        """JSON-ready, for a checkpoint's training metadata (`from_facts` reads it back)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_facts(cls, facts: Mapping[str, Any], vocab_size: int) -> Decoding:
        """`to_facts`' dict, checked: every id inside the vocabulary, every length a whole number."""
        if not isinstance(facts, Mapping):
            raise DecodingError(f"decoding settings must be a JSON object, got {type(facts).__name__}")
        unknown = sorted(set(facts) - {f for f in cls.__dataclass_fields__})
        if unknown:
            raise DecodingError(f"unknown decoding setting(s): {', '.join(unknown)}")

        def one(key: str, default: Any = ...) -> int | None:
            value = facts.get(key, default)
            if value is ... or (value is None and default is ...):
                raise DecodingError(f"decoding setting {key!r} is missing")
            return None if value is None else _token(value, vocab_size, key)

        def ids(key: str) -> tuple[int, ...]:
            return tuple(_token(v, vocab_size, key) for v in _bounded_list(facts.get(key, ()), key))

        eos = ids("eos")
        if not eos:
            raise DecodingError("decoding setting 'eos' needs at least one token id")
        max_length = facts.get("max_length")
        return cls(
            start=one("start"),
            eos=eos,
            forced_bos=one("forced_bos", None),
            forced_eos=ids("forced_eos"),
            max_length=None if max_length is None else _whole(max_length, "max_length", 1),
            min_length=_whole(facts.get("min_length", 0), "min_length"),
            no_repeat_ngram_size=_whole(facts.get("no_repeat_ngram_size", 0), "no_repeat_ngram_size"),
            bad_words=tuple(
                tuple(_token(t, vocab_size, "bad_words") for t in _bounded_list(w, "bad_words"))
                for w in _bounded_list(facts.get("bad_words", ()), "bad_words")
                if w
            ),
            suppress=ids("suppress"),
            begin_suppress=ids("begin_suppress"),
            repetition_penalty=_positive(facts.get("repetition_penalty", 1.0), "repetition_penalty"),
            default_length=facts.get("default_length", False) is True,
            ignored=tuple(str(s) for s in _bounded_list(facts.get("ignored", ()), "ignored")),
        )


def from_generation_config(settings: Mapping[str, Any], vocab_size: int) -> Decoding:
    """A Hugging Face generation config (or a model config's generation fields) as `Decoding`, as `generate` reads it.

    decoder_start_token_id falls back to bos_token_id; max_new_tokens wins over max_length, min_new_tokens over
    min_length (both counted after the start token); without either, generate's default of DEFAULT_NEW_TOKENS new
    tokens; EOS is removed from bad words, as transformers does.
    """

    def token_list(key: str) -> tuple[int, ...]:
        value = settings.get(key)
        if value is None:
            return ()
        values = value if isinstance(value, list) else [value]
        return tuple(_token(v, vocab_size, key) for v in _bounded_list(values, key))

    start = settings.get("decoder_start_token_id")
    start = settings.get("bos_token_id") if start is None else start
    if start is None:
        raise DecodingError("neither decoder_start_token_id nor bos_token_id is set: the decoder has no first token")
    eos = token_list("eos_token_id")
    if not eos:
        raise DecodingError("eos_token_id is not set: the decoder would never stop")
    max_length = settings.get("max_length")
    if settings.get("max_new_tokens") is not None:
        max_length = 1 + _whole(settings["max_new_tokens"], "max_new_tokens")
    default_length = max_length is None
    if default_length:
        max_length = 1 + DEFAULT_NEW_TOKENS
    min_length = settings.get("min_length") or 0
    if settings.get("min_new_tokens") is not None:
        min_length = 1 + _whole(settings["min_new_tokens"], "min_new_tokens")
    bad = [
        w
        for w in _bounded_list(settings.get("bad_words_ids") or [], "bad_words_ids")
        if w != [] and list(w) not in [[e] for e in eos]
    ]
    forced_bos = settings.get("forced_bos_token_id")
    penalty = settings.get("repetition_penalty")
    return Decoding.from_facts(
        {
            "start": start,
            "eos": list(eos),
            "forced_bos": forced_bos,
            "forced_eos": list(token_list("forced_eos_token_id")),
            "max_length": max_length,
            "min_length": min_length,
            "no_repeat_ngram_size": settings.get("no_repeat_ngram_size") or 0,
            "bad_words": bad,
            "suppress": list(token_list("suppress_tokens")),
            "begin_suppress": list(token_list("begin_suppress_tokens")),
            "repetition_penalty": 1.0 if penalty is None else penalty,
            "default_length": default_length,
            "ignored": sorted(k for k in UNSUPPORTED if settings.get(k) not in (None, False, 1.0, 0, [], {})),
        },
        vocab_size,
    )


def _repeated_ngram_ends(rows: list[list[int]], n: int) -> list[list[int]]:
    """For each row, the tokens that would complete an n-gram the row already holds (transformers' rule)."""
    out = []
    for seq in rows:
        prefix = tuple(seq[len(seq) - n + 1 :]) if n > 1 else ()
        out.append([seq[i + n - 1] for i in range(len(seq) - n + 1) if tuple(seq[i : i + n - 1]) == prefix])
    return out


def _token(value: Any, vocab_size: int, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < vocab_size:
        raise DecodingError(f"{key}: {value!r} is not a token id of this vocabulary (0 to {vocab_size - 1})")
    return value


def _whole(value: Any, key: str, least: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise DecodingError(f"{key} must be a whole number ≥ {least}, got {value!r}")
    return value


def _positive(value: Any, key: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise DecodingError(f"{key} must be a positive number, got {value!r}")
    return float(value)


def _bounded_list(value: Any, key: str) -> Sequence:
    if not isinstance(value, (list, tuple)) or len(value) > MAX_LIST:
        raise DecodingError(f"{key} must be a list of at most {MAX_LIST:,} items")
    return value
