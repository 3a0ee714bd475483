"""Parity you can see: run `transformers` itself on a Hugging Face folder and measure how far our import is from it.

`transformers` is optional (it is a test dependency, not the app's): `available()` says whether it is
installed. `compare` loads the folder with transformers' own class in float32 with its eager attention
(the one that returns weights), runs both models on a few texts, one text at a time, and returns the
largest absolute difference of every layer's attention weights and of the output distribution (next-token
probabilities of an LM, or an encoder's last hidden state). Nothing is downloaded: the folder is read
with `local_files_only`, and the hub is switched off before transformers is imported.
"""

from __future__ import annotations

import datetime
import importlib.util
import os
from pathlib import Path
from typing import Any

import torch

from transformer.checkpoints.format import Checkpoint, CheckpointError

TEXTS = (
    "The cat sat on the mat because it was warm.",
    "Attention is all you need, said the paper in 2017.",
    "Grandma bakes bread every Sunday; the whole street smells of it!",
)


def available() -> bool:
    """Whether `transformers` is installed here (the app never requires it)."""
    return importlib.util.find_spec("transformers") is not None


def _reference(folder: Path, kind: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: never reach for the hub
    import transformers

    transformers.utils.logging.disable_progress_bar()  # a page or a console, not a terminal progress display
    transformers.utils.logging.set_verbosity_error()
    cls = transformers.AutoModelForCausalLM if kind == "decoder" else transformers.AutoModel
    model = cls.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager", local_files_only=True)
    return model.eval(), transformers.__version__


@torch.inference_mode()
def compare(folder: str | os.PathLike, ckpt: Checkpoint, texts: tuple[str, ...] = TEXTS) -> dict[str, Any]:
    """Largest |ours − transformers'| over `texts`: every layer's attention weights and the output distribution.

    Returns {"max_attention_diff", "max_output_diff", "output", "texts", "tokens", "transformers", "torch", "date"}.
    """
    if not available():
        raise CheckpointError("verifying needs the transformers package (pip install transformers); the app runs without it")
    cfg = ckpt.config
    if cfg.kind == "encoder-decoder":
        raise CheckpointError("verifying an encoder-decoder against transformers is not supported yet")
    try:
        ref, version = _reference(Path(folder), cfg.kind)
    except Exception as e:  # transformers' own refusal (a config it cannot build, a file it cannot read)
        raise CheckpointError(
            f"transformers could not load {Path(folder).name}: {str(e).splitlines()[0] if str(e) else e!r}"
        ) from e
    model = ckpt.model
    attention_diff = output_diff = 0.0
    n_tokens = 0
    kind = cfg.attention_kinds[0]
    for text in texts:
        ids = list(ckpt.tokenizer.encode(text, max_len=cfg.max_len).ids)
        n_tokens += len(ids)
        x = torch.tensor([ids])
        _, trace = model(x.to(model.device), trace=True)
        out = ref(input_ids=x, output_attentions=True)
        for layer, weights in enumerate(out.attentions):
            ours = trace.attention(kind, layer).weights.cpu()
            attention_diff = max(attention_diff, float((ours - weights.float()).abs().max()))
        if cfg.kind == "decoder":
            theirs = out.logits.float().softmax(-1)
        else:
            theirs = out.last_hidden_state.float()
        ours_out = trace.probs.cpu() if cfg.kind == "decoder" else trace.encoder.final.cpu()
        output_diff = max(output_diff, float((ours_out - theirs).abs().max()))
    return {
        "max_attention_diff": attention_diff,
        "max_output_diff": output_diff,
        "output": "next-token probabilities" if cfg.kind == "decoder" else "last hidden state",
        "texts": len(texts),
        "tokens": n_tokens,
        "transformers": version,
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
    }
