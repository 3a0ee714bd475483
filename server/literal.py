"""User-supplied text inside Streamlit's Markdown messages, shown literally (no Streamlit here).

`st.warning`, `st.error`, `st.info`, `st.caption` and `st.markdown` render Markdown, and Streamlit's
Markdown also turns `:rocket:` into an emoji, `:red[x]` into coloured text and `$x$` into maths.
Backslash escapes do not stop those (they act on the parsed text), but a code span does: inside one,
CommonMark shows every character as typed, and Streamlit's extensions never look there. So anything
that came from a link, a file name or a checkpoint's metadata enters a message only through `md()`.
"""

from __future__ import annotations

import re

MAX_CHARS = 200  # a message quotes at most this much of a user's value


def md(value: object, max_chars: int = MAX_CHARS) -> str:
    """`value` as a Markdown code span that shows it literally, cut to `max_chars` characters (with "…").

    The fence is one backtick longer than the longest run of backticks inside, and padded with a
    space on each side (which CommonMark strips again), so backticks in the value cannot close it.
    Line breaks become spaces: a message quotes one line.
    """
    text = str(value)
    if len(text) > max_chars:
        text = text[:max_chars] + "…"
    text = re.sub(r"[\r\n\t\f\v]+", " ", text)
    runs = [len(r) for r in re.findall(r"`+", text)]
    fence = "`" * (max(runs, default=0) + 1)
    return f"{fence} {text} {fence}"


def html(value: object, max_chars: int = MAX_CHARS) -> str:
    """`value` as HTML text that shows it literally in the page's own font (for `st.html`), cut to `max_chars`.

    Every `<`, `>`, `&` and quote becomes an entity, so nothing in it is markup; `st.html` does not read Markdown
    or emoji short codes. Line breaks are kept by the caller's `white-space: pre-wrap`.
    """
    import html as _html

    text = str(value)
    if len(text) > max_chars:
        text = text[:max_chars] + "…"
    return _html.escape(text, quote=True)


def text_block(value: object, max_chars: int = MAX_CHARS, size: str = "1rem", bold: bool = False) -> str:
    """A `st.html` block showing `value` literally, line breaks kept (a prompt, a lesson's title or explanation)."""
    weight = "600" if bold else "400"
    return (
        f"<div style='white-space:pre-wrap;font-size:{size};font-weight:{weight};line-height:1.5'>{html(value, max_chars)}</div>"
    )
