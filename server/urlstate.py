"""The view a link describes: query parameters parsed into validated plain values (no Streamlit here).

Everything in the URL is a plain string; anything unexpected is dropped with a warning, never
evaluated. Ranges that depend on the model (layer, head, query token) are clamped later, once the
model is known. The warnings are Markdown (the app shows them with `st.warning`): a value from the
link enters one only through `literal.md`, which shows it as typed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from server.literal import md

KINDS = ("encoder self", "decoder self", "cross")
MAX_TEXT_CHARS = 20_000  # about 4 000 words: enough for any model's max_len, small enough for a URL
MAX_INDEX = 100_000
COMPARE_MODES = ("texts", "checkpoints", "snapshots")  # the Compare page: what differs between its two panels
ABLATION_MODES = ("zero", "mean")
SWEEP_METRICS = ("kl", "logprob", "logprob-next", "cosine")  # transformer.why.ablation.METRICS
KIND_LETTERS = {"e": "encoder self", "d": "decoder self", "c": "cross"}  # a head in a link: e0.1 = encoder self, layer 0, head 1
MAX_HEADS = 512
MAX_LANGUAGE_CHARS = 16  # the longest language token (NLLB's eng_Latn, M2M-100's __ast__) is 8
GRID_SCALES = ("linear", "sqrt", "stretch")  # the Model view's colours (viz.grid.SCALES)
ON, OFF = "1", "0"  # a switch in a link
MAX_NAME_CHARS = 200  # an uploaded model's file names, as a link quotes them
# Rollout & saliency: a link's word for each saliency method -> the method's name (the page's default first)
SALIENCY_METHODS = {"gradient-x-input": "gradient × input", "integrated-gradients": "integrated gradients"}
IG_STEPS = (16, 32, 64, 128, 256)  # integrated gradients' steps the page offers
IG_DEFAULT_STEPS = 64


@dataclass(frozen=True)
class UrlView:
    """What a shared link asks for; None means "not given" (use the default)."""

    checkpoint: str | None = None
    upload: str | None = None  # a link made on an uploaded model: the upload's digest (`shared.uploads_digest`)
    uploaded: str | None = None  # and its file names, as the link quotes them (for a message only)
    text: str | None = None
    target: str | None = None
    source_lang: str | None = None  # a multilingual translator's source language token (checked against the model later)
    target_lang: str | None = None  # and its target's
    kind: str | None = None
    layer: int | None = None
    head: int | None = None
    query: int | None = None
    page: str | None = None
    presentation: bool = False
    # the "Ask why" pages
    compare: str | None = None  # one of COMPARE_MODES
    text2: str | None = None  # Compare: the second text
    checkpoint2: str | None = None  # Compare: the second checkpoint
    snapshot1: int | None = None  # Compare: the first panel's training snapshot (index)
    snapshot2: int | None = None  # Compare: the second panel's training snapshot (index)
    heads: tuple[tuple[str, int, int], ...] | None = None  # Ablation: the heads knocked out, (kind, layer, head)
    ablation: str | None = None  # one of ABLATION_MODES
    metric: str | None = None  # one of SWEEP_METRICS
    # options shown beside the figures (None: the page's default)
    stretch: bool | None = None  # Attention: "Stretch colours to this head"
    skip_first: bool | None = None  # every attention heatmap: "Leave the first token out of the colour scale"
    scale: str | None = None  # Model view: one of GRID_SCALES
    group: bool | None = None  # Model view: "Group heads by key/value head"
    flow: bool | None = None  # Rollout & saliency: "Attention flow" (None: on where it is cheap, one or two layers)
    method: str | None = None  # Rollout & saliency: a value of SALIENCY_METHODS
    steps: int | None = None  # Rollout & saliency: integrated gradients' steps, one of IG_STEPS
    dec_pos: int | None = None  # Rollout & saliency: the decoder position explained (None: the last; clamped to the text later)
    sublayers: bool | None = None  # Logit lens: "Every sublayer"
    window: int | None = None  # Logit lens: the last position of its window (None: the text's last; clamped later)
    copies: bool | None = None  # Ablation: count only the positions where copying predicts the next token
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


def _choice(params: Mapping[str, object], name: str, allowed: Sequence[str], warnings: list[str]) -> str | None:
    value = _one(params, name)
    if value is not None and value not in allowed:
        warnings.append(f"Ignored the link's {name} {md(value, 30)}: expected one of {', '.join(allowed)}.")
        return None
    return value


def _switch(params: Mapping[str, object], name: str, warnings: list[str]) -> bool | None:
    """An on/off option from the link: "1" or "0" (None: not given)."""
    value = _one(params, name)
    if value is None or value == "":
        return None
    if value not in (ON, OFF):
        warnings.append(f"Ignored the link's {name} {md(value, 20)}: expected {ON} (on) or {OFF} (off).")
        return None
    return value == ON


def switch(on: bool) -> str:
    """An on/off option as a link writes it."""
    return ON if on else OFF


def _steps(params: Mapping[str, object], warnings: list[str]) -> int | None:
    value = _choice(params, "ig_steps", tuple(map(str, IG_STEPS)), warnings)
    return None if value is None else int(value)


def method_word(method: str) -> str:
    """A saliency method as a link writes it (the inverse of SALIENCY_METHODS)."""
    return next(word for word, name in SALIENCY_METHODS.items() if name == method)


def _language(params: Mapping[str, object], name: str, warnings: list[str]) -> str | None:
    """A language token from the link: a short plain string here; whether the model has it is judged once it is loaded."""
    value = _one(params, name) or None  # empty: not given
    if value is not None and len(value) > MAX_LANGUAGE_CHARS:
        warnings.append(f"Ignored the link's {name} {md(value, 30)}: not a language token (e.g. en_XX, __de__, deu_Latn).")
        return None
    return value


def format_heads(heads) -> str:
    """Heads as a link writes them: "e0.1,c1.2" (kind letter, layer, head)."""
    letter = {kind: ch for ch, kind in KIND_LETTERS.items()}
    return ",".join(f"{letter[kind]}{layer}.{head}" for kind, layer, head in heads)


def parse_heads(raw: str | None, warnings: list[str]) -> tuple[tuple[str, int, int], ...] | None:
    """ "e0.1,c1.2" -> (("encoder self", 0, 1), ("cross", 1, 2)); anything malformed is dropped with a warning."""
    if raw is None:
        return None
    heads, bad = [], []
    for item in raw.split(",")[: MAX_HEADS + 1]:
        m = re.fullmatch(r"([edc])(\d{1,3})\.(\d{1,3})", item.strip())
        if m:
            heads.append((KIND_LETTERS[m[1]], int(m[2]), int(m[3])))
        elif item.strip():
            bad.append(item)
    if bad:
        warnings.append(
            f"Ignored {len(bad)} head(s) in the link, e.g. {md(bad[0], 20)}: expected e.g. e0.1 (kind letter e, d or c, layer.head)."
        )
    return tuple(dict.fromkeys(heads))[:MAX_HEADS]


def parse(params: Mapping[str, object], checkpoints: Sequence[str], pages: Sequence[str] = ()) -> UrlView:
    """Validate query parameters against the known checkpoint names and page names."""
    warnings: list[str] = []
    checkpoint = _one(params, "checkpoint")
    has_text = _one(params, "text") is not None
    if checkpoint is not None and checkpoint not in checkpoints:
        warnings.append(missing_checkpoint(checkpoint, checkpoints, has_text))
        checkpoint = None
    uploaded = _one(params, "uploaded")  # a link made on an uploaded model: its file names (no checkpoint)
    uploaded = None if not uploaded or checkpoint is not None else uploaded[:MAX_NAME_CHARS]
    upload = _one(params, "upload")  # and the upload's digest: this server may still hold it (session.init_session)
    if upload is not None and not re.fullmatch(r"[0-9a-f]{64}", upload):
        warnings.append(f"Ignored the link's upload {md(upload, 20)}: not the digest of an upload (64 hex digits).")
        upload = None
    if checkpoint is not None:
        upload = None
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
    checkpoint2 = _one(params, "checkpoint2")
    if checkpoint2 is not None and checkpoint2 not in checkpoints:
        warnings.append(f"Unknown checkpoint2 {md(checkpoint2, 40)} in the link.")
        checkpoint2 = None
    text2 = _one(params, "text2")
    if text2 is not None and len(text2) > MAX_TEXT_CHARS:
        warnings.append(f"The text2 in the link was cut to its first {MAX_TEXT_CHARS} characters.")
        text2 = text2[:MAX_TEXT_CHARS]
    page = _one(params, "page")
    if page is not None and page not in pages:
        warnings.append(f"Unknown page {md(page, 30)} in the link.")
        page = None
    return UrlView(
        checkpoint=checkpoint,
        upload=upload,
        uploaded=uploaded,
        text=text,
        target=target,
        source_lang=_language(params, "src_lang", warnings),
        target_lang=_language(params, "tgt_lang", warnings),
        kind=kind,
        layer=_index(_one(params, "layer"), "layer", warnings),
        head=_index(_one(params, "head"), "head", warnings),
        query=_index(_one(params, "q"), "q", warnings),
        page=page,
        presentation=_one(params, "present") in ("1", "true", "yes"),
        compare=_choice(params, "cmp", COMPARE_MODES, warnings),
        text2=text2,
        checkpoint2=checkpoint2,
        snapshot1=_index(_one(params, "snap1"), "snap1", warnings),
        snapshot2=_index(_one(params, "snap2"), "snap2", warnings),
        heads=parse_heads(_one(params, "heads"), warnings),
        ablation=_choice(params, "ablation", ABLATION_MODES, warnings),
        metric=_choice(params, "metric", SWEEP_METRICS, warnings),
        stretch=_switch(params, "stretch", warnings),
        skip_first=_switch(params, "skip_first", warnings),
        scale=_choice(params, "scale", GRID_SCALES, warnings),
        group=_switch(params, "group", warnings),
        flow=_switch(params, "flow", warnings),
        method=SALIENCY_METHODS.get(_choice(params, "method", tuple(SALIENCY_METHODS), warnings)),
        steps=_steps(params, warnings),
        dec_pos=_index(_one(params, "dec_pos"), "dec_pos", warnings),
        sublayers=_switch(params, "sublayers", warnings),
        window=_index(_one(params, "window"), "window", warnings),
        copies=_switch(params, "copies", warnings),
        warnings=tuple(warnings),
    )


def _default_on(has_text: bool) -> str:
    return "Showing the default checkpoint" + (" on the link's text, which that model may not read" if has_text else "")


def missing_checkpoint(name: str, checkpoints: Sequence[str], has_text: bool) -> str:
    """The warning for a link naming a checkpoint this server does not have (the name shown literally)."""
    return (
        f"Unknown checkpoint {md(name, 40)} in the link: this server does not have it. {_default_on(has_text)}. "
        f"Known: {', '.join(md(c) for c in checkpoints)}."
    )


def missing_upload(names: str, has_text: bool) -> str:
    """The warning for a link made on an uploaded model (its file names shown literally) that this server does not hold:
    it keeps the latest uploads only while some session still has them loaded, and never another server's."""
    return (
        f"This link was made on an uploaded model, {md(names)}, which this server no longer holds (an upload stays "
        f"open to its link only while the server keeps it loaded), or which was uploaded to another server. Upload the "
        f"files again (Checkpoint: Upload…) to see it. {_default_on(has_text)}."
    )


def clamp(value: int, n: int, name: str, warnings: list[str], low: int = 0) -> int:
    """`value` forced into low..n-1, with a warning when it had to move."""
    if low <= value < n:
        return value
    fixed = min(max(value, low), n - 1)
    warnings.append(f"{name} {value} is out of range ({low}–{n - 1}); showing {name} {fixed}.")
    return fixed
