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

from transformer.api import streams
from transformer.checkpoints.format import Checkpoint, CheckpointError

TEXTS = (
    "The cat sat on the mat because it was warm.",
    "Attention is all you need, said the paper in 2017.",
    "Grandma bakes bread every Sunday; the whole street smells of it!",
)
# an encoder-decoder's decoder reads a given target (after its start and forced tokens), one per text
TARGETS = (
    "Die Katze saß auf der Matte, weil sie warm war.",
    "Aufmerksamkeit ist alles, was man braucht.",
    "Oma backt jeden Sonntag Brot.",
)


def available() -> bool:
    """Whether `transformers` is installed here (the app never requires it)."""
    return importlib.util.find_spec("transformers") is not None


def _reference(folder: Path, kind: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: never reach for the hub
    import transformers

    transformers.utils.logging.disable_progress_bar()  # a page or a console, not a terminal progress display
    transformers.utils.logging.set_verbosity_error()
    cls = {"decoder": transformers.AutoModelForCausalLM, "encoder-decoder": transformers.AutoModelForSeq2SeqLM}.get(
        kind, transformers.AutoModel
    )
    model = cls.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager", local_files_only=True)
    return model.eval(), transformers.__version__


@torch.inference_mode()
def compare(
    folder: str | os.PathLike, ckpt: Checkpoint, texts: tuple[str, ...] = TEXTS, targets: tuple[str, ...] = TARGETS
) -> dict[str, Any]:
    """Largest |ours − transformers'| over `texts`: every layer's attention weights and the output distribution.

    An encoder-decoder reads text i as its source and targets[i] (cycled) as its decoder's text: its encoder
    self, decoder self and cross weights are compared, and the next-token probabilities at every target position.
    Returns {"max_attention_diff", "max_output_diff", "output", "texts", "tokens", "transformers", "torch", "date"}.
    """
    if not available():
        raise CheckpointError("verifying needs the transformers package (pip install transformers); the app runs without it")
    cfg = ckpt.config
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
    for i, text in enumerate(texts):
        if cfg.kind == "encoder-decoder":
            diffs = _compare_seq2seq(ckpt, ref, text, targets[i % len(targets)])
            attention_diff, output_diff = max(attention_diff, diffs[0]), max(output_diff, diffs[1])
            n_tokens += diffs[2]
            continue
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
        "output": "last hidden state" if cfg.kind == "encoder" else "next-token probabilities",
        "texts": len(texts),
        "tokens": n_tokens,
        "transformers": version,
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
    }


def _compare_seq2seq(ckpt: Checkpoint, ref, text: str, target: str) -> tuple[float, float, int]:
    """(attention diff, probability diff, tokens) of one source and target through ours and transformers'."""
    source, decoder = streams(ckpt, text, target)
    x, y = torch.tensor([source.ids]), torch.tensor([decoder.ids])
    model = ckpt.model
    _, trace = model(x.to(model.device), y.to(model.device), trace=True)
    out = ref(input_ids=x, decoder_input_ids=y, output_attentions=True)
    attention = 0.0
    for kind, theirs in (
        ("encoder self", out.encoder_attentions),
        ("decoder self", out.decoder_attentions),
        ("cross", out.cross_attentions),
    ):
        if len(theirs) != trace.n_layers(kind):
            raise CheckpointError(f"transformers computes {len(theirs)} {kind} layers, ours {trace.n_layers(kind)}")
        for layer, weights in enumerate(theirs):
            attention = max(attention, float((trace.attention(kind, layer).weights.cpu() - weights.float()).abs().max()))
    output = float((trace.probs.cpu() - out.logits.float().softmax(-1)).abs().max())
    return attention, output, len(source.ids) + len(decoder.ids)
