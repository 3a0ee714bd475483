"""The server owner's own models in the picker: models folders and the Hugging Face cache, shared by every session.

`transformer/checkpoints/sources.py` finds and judges them (no Streamlit); here the scan is kept for
SCAN_SECONDS for everyone (and made again at once when a models folder or the cache changes at its top),
its models become the picker's entries after the shipped ones, and `render_sources` writes where
models were looked for and what was found that cannot be opened. Paths, names and reasons come from
the disk, so they are shown only literally: in code spans (`literal.md`) or a table.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import streamlit as st

from server import training_jobs
from server.literal import md
from transformer.checkpoints import catalog, sources

SCAN_SECONDS = 30  # a model copied into a folder's sub-folder shows within this (one at the top: at once)
RESERVED = (*catalog.SHIPPED, catalog.MINILM, "upload")  # "upload": session.UPLOAD, the picker's own choice
TRAINED = re.compile(rf"{re.escape(training_jobs.ENTRY_PREFIX)}\d+")  # models trained on this server ("trained-3")


def reserved(name: str) -> bool:
    """A name the picker already uses (or will, for a model trained here): a model found on disk takes another."""
    return name in RESERVED or TRAINED.fullmatch(name) is not None


@st.cache_resource(ttl=SCAN_SECONDS, max_entries=4, show_spinner="Looking for models…")
def _scan(folders: tuple[str, ...], cache: str | None, stamp: tuple) -> sources.Scan:
    """One scan per (folders, cache, their mtimes), shared by every session; `stamp` only keys it."""
    return sources.scan(tuple(Path(f) for f in folders), Path(cache) if cache else None, reserved)


def scan() -> sources.Scan:
    """What the models folders ($ATTNVIZ_MODELS) and the Hugging Face cache hold now (at most SCAN_SECONDS old)."""
    folders, cache = sources.models_folders(), sources.hf_cache_dir()

    def mtime(path: Path) -> int | None:
        try:
            return path.stat().st_mtime_ns
        except OSError:
            return None

    stamp = tuple(mtime(p) for p in (*folders, *([cache] if cache else [])))
    return _scan(tuple(str(f) for f in folders), None if cache is None else str(cache), stamp)


def entries() -> dict[str, catalog.CatalogEntry]:
    """The models found on disk, as the picker's entries (app.py puts them after the shipped ones)."""
    return sources.catalog_entries(scan())


def render_sources(container) -> None:
    """Where this server looks for models, and what it found there that cannot be opened, with the reasons.

    `container`: `st`, or any Streamlit container (the Checkpoint page's). Only literal text from the disk.
    """
    found = scan()
    c = container
    c.markdown("**Where models come from**")
    if found.folders:
        c.markdown(f"Models folders (`ATTNVIZ_MODELS`): {', '.join(md(f) for f in found.folders)}")
    else:
        c.markdown(
            "Models folders: none. Start the server with `ATTNVIZ_MODELS=/path/to/models` (several: separated by `:`), "
            "or `make run MODELS=/path/to/models`."
        )
    if found.cache is None:
        c.markdown("Hugging Face cache: left out (`ATTNVIZ_NO_HF_CACHE` is set).")
    else:
        c.markdown(f"Hugging Face cache: {md(found.cache)}, read in place (nothing is downloaded, nothing written).")
    names = ", ".join(md(f.name, 60) for f in found.offered[:20]) + (" …" if len(found.offered) > 20 else "")
    c.markdown(f"Offered in the picker: {len(found.offered)} model(s){': ' + names if found.offered else ''}.")
    for note in found.notes:
        c.caption(f"Note: {md(note, 300)}")
    if found.refused:
        c.markdown(f"Found, but cannot be opened ({len(found.refused)}):")
        table = pd.DataFrame(
            {
                "model": [f.name for f in found.refused],
                "where": [f"{f.where}: {f.path}" for f in found.refused],
                "why": [f.problem for f in found.refused],
            }
        )
        c.dataframe(table, hide_index=True, column_config={"why": st.column_config.TextColumn(width="large")})
    c.caption(
        "Or upload one in the sidebar (Checkpoint → Upload…): this project's .safetensors, a Hugging Face folder's files "
        "or a .zip of it, or a nanoGPT ckpt.pt with its meta.pkl."
    )
