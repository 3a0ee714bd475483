"""mBART (mbart-large-cc25, mBART-50): BART made pre-LN, with a final LayerNorm after each stack.

The rest is BART's (`bart.py`): learned positions read from row 2, `layernorm_embedding`, biases everywhere,
final_logits_bias. Languages are tokens (en_XX, de_DE, …): the tokenizer puts the source's around the text, and
generation forces the target's as the first token (forced_bos_token_id, read by the loader). MBartConfig has no
decoder_start_token_id: transformers' generate then starts with bos_token_id.
"""

from __future__ import annotations

from typing import Any

from transformer.checkpoints.importers.bart import (
    BART_DEFAULTS,
    IGNORABLE,
    Layout,
    check_embeddings,
    facts_of,
    seq2seq_config,
    weights,
)
from transformer.checkpoints.importers.parts import Family

# MBartConfig's defaults are BartConfig's; its generation ids too, but for decoder_start_token_id (none)
MBART_GENERATION = {"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "forced_eos_token_id": 2}
MBART = Layout(pre_ln=True, embed_norm=True, positions="learned", base="MBartModel")


def config(hf: dict[str, Any]) -> dict[str, Any]:
    return seq2seq_config({**BART_DEFAULTS, **hf}, MBART)


FAMILY = Family(
    "mbart",
    ("MBartForConditionalGeneration", MBART.base),
    "model.",
    IGNORABLE,
    config,
    weights,
    facts=facts_of(config, MBART),
    generation=MBART_GENERATION,
    check=check_embeddings,
)
