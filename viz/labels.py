"""Token labels for figures and tables: unique per position, and never interpreted as HTML by Plotly."""

from __future__ import annotations

import html
import json
import unicodedata
from collections.abc import Iterable, Sequence

SEP = "·"  # between position and token in a unique label: "3·the"


def _byte_alphabet() -> dict[str, int]:
    """GPT-2's byte-to-character table, inverted: the character a ByteLevel tokenizer writes for each byte.

    Printable bytes stand for themselves; the others (control bytes, space, 0x7F-0xA0, 0xAD) are moved to
    U+0100 onwards in order, so a space is "Ġ" (U+0120) and a newline "Ċ" (U+010A).
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    moved = [b for b in range(256) if b not in printable]
    return {chr(b): b for b in printable} | {chr(256 + n): b for n, b in enumerate(moved)}


BYTES = _byte_alphabet()
# What stands for the bytes a label could not show: a space, a line break, a tab; other control bytes become
# their Unicode control pictures (U+2400 + byte: "␀"), bytes that are no whole UTF-8 character "⟨e2⟩".
SHOWN = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}
MARKED = {"Ġ", "Ċ", "ĉ"}  # the byte-level characters of a space, a newline and a tab


def byte_level(tokenizer: object) -> bool:
    """Whether a `tokenizers.Tokenizer` (or our wrapper around one) splits bytes as GPT-2 and Llama 3 do.

    True when its pre-tokenizer or its decoder is ByteLevel (alone or inside a Sequence): only then do "Ġ"
    and "Ċ" in a token mean a space and a newline. WordPiece's "##" and Metaspace's "▁" are left alone.
    """
    inner = getattr(tokenizer, "inner", tokenizer)

    def has_byte_level(part) -> bool:
        if part is None:
            return False
        try:
            state = json.loads(part.__getstate__())
        except Exception:  # not a tokenizers component: nothing to read
            return False
        return '"ByteLevel"' in json.dumps(state)

    return has_byte_level(getattr(inner, "pre_tokenizer", None)) or has_byte_level(getattr(inner, "decoder", None))


def looks_byte_level(tokens: Sequence[str]) -> bool:
    """Whether `tokens` read as a ByteLevel tokenizer's, when the tokenizer is not at hand.

    Every character must be one of the 256 byte characters and some token must hold a space, newline
    or tab as "Ġ", "Ċ", "ĉ". A WordPiece or Metaspace tokenizer writes "##"-words, "▁"-words and words in
    their own letters: a "Ġ" there is a letter typed by someone (Maltese), lowercased to "ġ" by most of them.
    """
    return any(c in MARKED for t in tokens for c in t) and all(c in BYTES for t in tokens for c in t)


def shown_token(token: str) -> str:
    """A byte-level token as the text it stands for, its spaces and line breaks made visible: "Ġb" -> "␣b", "Ċ" -> "↵".

    The bytes are decoded as UTF-8 ("ĠcafÃ©" -> "␣café"); a byte that is no whole character is shown as "⟨e2⟩".
    A token with any character that is not a byte character (an added special token) is shown as it is.
    """
    if not token or any(c not in BYTES for c in token):
        return token
    # surrogateescape: a byte that is no whole UTF-8 character comes back as U+DC80 + byte, shown by number below
    text = bytes(BYTES[c] for c in token).decode("utf-8", errors="surrogateescape")
    out = []
    for c in text:
        code = ord(c)
        if c in SHOWN:
            out.append(SHOWN[c])
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"⟨{code - 0xDC00:02x}⟩")
        elif code < 0x20:
            out.append(chr(0x2400 + code))  # control pictures: "␀" … "␟"
        elif code == 0x7F:
            out.append("␡")
        else:
            out.append(c)
    return "".join(out)


def shown_tokens(tokens: Iterable[str], byte_level: bool | None = None) -> list[str]:
    """The tokens as labels show them: byte-level ones with visible spaces (`shown_token`), any other as it is.

    byte_level: from the tokenizer (`byte_level(tokenizer)`) where it is at hand; None reads it off the tokens.
    """
    tokens = list(tokens)  # read twice below: a generator would be empty the second time
    if byte_level is None:
        byte_level = looks_byte_level(tokens)
    return [shown_token(t) for t in tokens] if byte_level else tokens


def unique_labels(tokens: Iterable[str], byte_level: bool | None = None) -> list[str]:
    """One label per position ("0·the", "1·cat", ...), so repeated tokens never merge on a categorical axis.

    A byte-level tokenizer's spaces and line breaks are shown ("3·␣cat", not "3·Ġcat"): see `shown_tokens`.
    """
    return [f"{i}{SEP}{tok}" for i, tok in enumerate(shown_tokens(tokens, byte_level))]


def raw_note(tokens: Iterable[str], byte_level: bool | None = None) -> list[str]:
    """Per token, what a hover adds to its label: the tokenizer's own text (" (raw Ġcat)") where the label shows another."""
    tokens = list(tokens)
    return [f" (raw {t})" if s != t else "" for s, t in zip(shown_tokens(tokens, byte_level), tokens)]


def head_labels(n_heads: int, group_size: int = 1) -> list[str]:
    """Head names for an axis: "H5", or under grouped-query attention "H5 · kv1" (the key/value head it reads)."""
    if group_size <= 1:
        return [f"H{h}" for h in range(n_heads)]
    return [f"H{h} {SEP} kv{h // group_size}" for h in range(n_heads)]


def plotly_text(text: object) -> str:
    """Text shown literally by Plotly, wherever it goes: labels, titles, hover values.

    Plotly renders a subset of HTML (<b>, <br>, <a href>, &amp;), so `<`, `>` and `&` become entities.
    `%` and `$` become numeric entities too: "%{x}" inside a hover template would be filled in, and a
    label between two `$` would be handed to MathJax. Plotly turns every entity back into the literal
    character on screen, after it has looked for templates and maths.
    """
    return html.escape(str(text), quote=False).replace("%", "&#37;").replace("$", "&#36;")


def text_px(text: str, size: int) -> float:
    """Estimated width in pixels of `text` at font `size`: ~0.6 em a character, 1.1 em for wide (CJK, emoji) ones.

    Used to size figure margins up front: Plotly's automargin measures the labels after a first
    draw and then draws again, which doubles the cost of every heatmap redraw.
    """
    return size * sum(1.1 if unicodedata.east_asian_width(c) in "WF" else 0.6 for c in text)


def tick_step(n: int, max_ticks: int = 64) -> int:
    """Show every k-th tick so that at most about `max_ticks` labels share an axis."""
    return max(1, -(-n // max_ticks))
