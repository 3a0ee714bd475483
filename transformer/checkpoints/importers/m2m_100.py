"""M2M-100 and NLLB-200 (model_type m2m_100): a pre-LN BART with a final LayerNorm per stack and no
`layernorm_embedding`, whose positions are fairseq's fixed sinusoid.

fairseq's table: [sin(p·w_i) | cos(p·w_i)] with w_i = exp(−i · ln 10000 / (d/2 − 1)), and the first token at
position pad_token_id + 1 (2 in the released models). The embeddings are scaled by √d_model (scale_embedding,
true by default); the LM head has no bias and no final_logits_bias. Languages are tokens (__en__, __de__;
NLLB's eng_Latn): the tokenizer puts the source's before the text, generation forces the target's first
(forced_bos_token_id, read by the loader).

fairseq gives a pad token inside a text the padding position and does not count it: a text holds no pad tokens
(the tokenizer adds none, and greedy decoding of a trained model does not produce one), so we number every
token. transformers computes the table and saves none (`embed_positions.weights` in an old file is dropped).
"""

from __future__ import annotations

from typing import Any

from transformer.checkpoints.importers.bart import IGNORABLE, Layout, check_embeddings, facts_of, seq2seq_config, weights
from transformer.checkpoints.importers.parts import Family

# transformers' M2M100Config defaults for the fields a config.json may leave out (m2m100_418M's shape)
M2M100_DEFAULTS = {
    "vocab_size": 128112, "max_position_embeddings": 1024, "d_model": 1024, "encoder_layers": 12, "decoder_layers": 12,
    "encoder_attention_heads": 16, "decoder_attention_heads": 16, "encoder_ffn_dim": 4096, "decoder_ffn_dim": 4096,
    "activation_function": "relu", "scale_embedding": True, "tie_word_embeddings": True, "pad_token_id": 1,
}  # fmt: skip
# M2M100Config's generation ids: decoding starts with </s> (2); nothing is forced unless a config says so
M2M100_GENERATION = {"decoder_start_token_id": 2, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}
M2M100 = Layout(pre_ln=True, embed_norm=False, positions="fairseq", base="M2M100Model", logits_bias=False)


def config(hf: dict[str, Any]) -> dict[str, Any]:
    return seq2seq_config({**M2M100_DEFAULTS, **hf}, M2M100)


FAMILY = Family(
    "m2m_100",
    ("M2M100ForConditionalGeneration", M2M100.base),
    "model.",
    rf"({IGNORABLE}|(encoder|decoder)\.embed_positions\.weights)",
    config,
    weights,
    facts=facts_of(config, M2M100),
    generation=M2M100_GENERATION,
    check=check_embeddings,
)
