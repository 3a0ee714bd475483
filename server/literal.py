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
