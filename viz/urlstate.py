"""The view a link describes: query parameters parsed into validated plain values (no Streamlit here).

Everything in the URL is a plain string; anything unexpected is dropped with a warning, never
evaluated. Ranges that depend on the model (layer, head, query token) are clamped later, once the
model is known. The warnings are Markdown (the app shows them with `st.warning`): a value from the
link enters one only through `literal.md`, which shows it as typed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .literal import md

KINDS = ("encoder self", "decoder self", "cross")
MAX_TEXT_CHARS = 20_000  # about 4 000 words: enough for any model's max_len, small enough for a URL
MAX_INDEX = 100_000


@dataclass(frozen=True)
class UrlView:
    """What a shared link asks for; None means "not given" (use the default)."""

    checkpoint: str | None = None
    text: str | None = None
    target: str | None = None
    kind: str | None = None
    layer: int | None = None
    head: int | None = None
    query: int | None = None
    page: str | None = None
    presentation: bool = False
    warnings: tuple[str, ...] = ()


def _one(params: Mapping[str, object], name: str) -> str | None:
    value = params.get(name)
    if isinstance(value, list | tuple):  # a repeated key: the last one wins, as in st.query_params
        value = value[-1] if value else None
    return None if value is None else str(value)


def _index(raw: str | None, name: str, warnings: list[str]) -> int | None:
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or int(raw) > MAX_INDEX:
        warnings.append(f"Ignored the link's {name} {md(raw, 20)}: expected a whole number ≥ 0.")
        return None
    return int(raw)


def parse(params: Mapping[str, object], checkpoints: Sequence[str], pages: Sequence[str] = ()) -> UrlView:
    """Validate query parameters against the known checkpoint names and page names."""
    warnings: list[str] = []
    checkpoint = _one(params, "checkpoint")
    if checkpoint is not None and checkpoint not in checkpoints:
        warnings.append(
            f"Unknown checkpoint {md(checkpoint, 40)} in the link; showing the default. "
            f"Known: {', '.join(md(c) for c in checkpoints)}."
        )
        checkpoint = None
    text, target = _one(params, "text"), _one(params, "target")
    for name, value in (("text", text), ("target", target)):
        if value is not None and len(value) > MAX_TEXT_CHARS:
            warnings.append(f"The {name} in the link was cut to its first {MAX_TEXT_CHARS} characters.")
    text = None if text is None else text[:MAX_TEXT_CHARS]
    target = None if target is None else target[:MAX_TEXT_CHARS]
    kind = _one(params, "kind")
    if kind is not None and kind not in KINDS:
        warnings.append(f"Unknown attention kind {md(kind, 30)} in the link; expected one of {', '.join(KINDS)}.")
        kind = None
    page = _one(params, "page")
    if page is not None and page not in pages:
        warnings.append(f"Unknown page {md(page, 30)} in the link.")
        page = None
    return UrlView(
        checkpoint=checkpoint,
        text=text,
        target=target,
        kind=kind,
        layer=_index(_one(params, "layer"), "layer", warnings),
        head=_index(_one(params, "head"), "head", warnings),
        query=_index(_one(params, "q"), "q", warnings),
        page=page,
        presentation=_one(params, "present") in ("1", "true", "yes"),
        warnings=tuple(warnings),
    )


def clamp(value: int, n: int, name: str, warnings: list[str]) -> int:
    """`value` forced into 0..n-1, with a warning when it had to move."""
    if 0 <= value < n:
        return value
    fixed = min(max(value, 0), n - 1)
    warnings.append(f"{name} {value} is out of range (0–{n - 1}); showing {name} {fixed}.")
    return fixed
