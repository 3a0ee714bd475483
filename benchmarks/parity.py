"""The README's parity tables: each supported Hugging Face family against `transformers` itself.

Run: `.venv/bin/python -m benchmarks.parity` (needs the dev requirements; about a minute). For each family a
small model with random weights is built with transformers' own class from a config that exercises what
is new in it (grouped-query attention, a sliding window shorter than the text, partial rotary, rope
scaling, q/k norms, biases, tied or untied; for the encoder-decoders relative-bias buckets fewer than the
text, position offsets and layouts, encoder and decoder of different depths, pre- or post-LN), saved with
`save_pretrained` beside a tokenizer.json trained here, imported by our `load_hf_dir`, and compared by
`transformer.checkpoints.verify.compare` (float32, transformers' eager attention): the largest difference
of every layer's attention weights (encoder self, decoder self and cross for the encoder-decoders, which
read verify's target texts) and of the output distribution, over verify's three texts. The encoder-decoders'
greedy translations are then compared with transformers' `generate(num_beams=1, do_sample=False)`, forced
language tokens included. Nothing is downloaded.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: never reach for the hub

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from benchmarks.core import machine
from transformer.api import greedy_decode
from transformer.checkpoints.importers import load_hf_dir
from transformer.checkpoints.verify import TARGETS, TEXTS, compare

SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=8, max_position_embeddings=128)
CASES = [  # (family, what the config exercises, model class, config fields)
    ("gpt2", "learned positions, tied", transformers.GPT2LMHeadModel,
     dict(n_embd=64, n_layer=3, n_head=8, n_positions=128)),
    ("llama", "GQA 8/2, untied", transformers.LlamaForCausalLM, dict(num_key_value_heads=2)),
    ("llama", "MQA, head_dim 16 ≠ 64/8, biases, tied", transformers.LlamaForCausalLM,
     dict(num_key_value_heads=1, head_dim=16, attention_bias=True, mlp_bias=True, tie_word_embeddings=True)),
    ("llama", "llama3 rope scaling ×8 (original context 32)", transformers.LlamaForCausalLM,
     dict(num_key_value_heads=2, rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
          "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 32})),
    ("mistral", "sliding window 8 < text", transformers.MistralForCausalLM, dict(num_key_value_heads=2, sliding_window=8)),
    ("qwen2", "q/k/v bias, window 8 in layers 1–2", transformers.Qwen2ForCausalLM,
     dict(num_key_value_heads=2, use_sliding_window=True, sliding_window=8, max_window_layers=1)),
    ("qwen3", "q/k norms, head_dim 16", transformers.Qwen3ForCausalLM, dict(num_key_value_heads=2, head_dim=16)),
    ("gemma", "MQA, head_dim 16, (1 + w) RMSNorm, scaled embeddings, GeGLU", transformers.GemmaForCausalLM,
     dict(num_key_value_heads=1, head_dim=16)),
    ("gpt_neox", "rotary on 25 % of dims, parallel residual", transformers.GPTNeoXForCausalLM,
     dict(rotary_pct=0.25, use_parallel_residual=True)),
    ("phi3", "fused q·k·v and gate·up matrices, rotary on 50 %, GQA, window 8", transformers.Phi3ForCausalLM,
     dict(num_key_value_heads=2, partial_rotary_factor=0.5, sliding_window=8, pad_token_id=None)),
]  # fmt: skip


SEQ = dict(d_model=64, encoder_layers=3, decoder_layers=2, encoder_attention_heads=8, decoder_attention_heads=8,
           encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=128,
           bos_token_id=0, pad_token_id=1, eos_token_id=2, decoder_start_token_id=2)  # fmt: skip
T5 = dict(d_model=64, d_kv=8, d_ff=128, num_layers=3, num_decoder_layers=2, num_heads=8, relative_attention_num_buckets=8,
          relative_attention_max_distance=16, pad_token_id=1, eos_token_id=2, decoder_start_token_id=1)  # fmt: skip
LANGUAGES = ("en_XX", "de_DE")  # added special tokens: mBART-50's and M2M-100's target languages are forced first
SEQ2SEQ = [  # (family, what the config exercises, model class, config fields, forced target language)
    ("t5", "relative bias in 8 buckets (< the text), 3 + 2 layers, unscaled scores, tied head scaled by d^-0.5",
     transformers.T5ForConditionalGeneration, dict(T5, feed_forward_proj="relu"), None),
    ("t5", "gated-GELU (v1.1, Flan-T5), head not scaled", transformers.T5ForConditionalGeneration,
     dict(T5, feed_forward_proj="gated-gelu", tie_word_embeddings=False), None),
    ("bart", "learned positions from row 2, post-LN, layernorm_embedding, logits bias, forced <s>",
     transformers.BartForConditionalGeneration, dict(SEQ, forced_bos_token_id=0), None),
    ("mbart", "pre-LN with final norms, scaled embeddings, forced language token", transformers.MBartForConditionalGeneration,
     dict(SEQ, scale_embedding=True), "de_DE"),
    ("marian", "sinusoid in sin and cos halves, scaled embeddings, post-LN, logits bias", transformers.MarianMTModel,
     dict(SEQ, decoder_start_token_id=1, scale_embedding=True), None),
    ("m2m_100", "fairseq sinusoid from position pad + 1, pre-LN, forced language token", transformers.M2M100ForConditionalGeneration,
     dict(SEQ, scale_embedding=True), "de_DE"),
]  # fmt: skip


def tokenizer() -> Tokenizer:
    """A byte-level BPE with <s> before every text, trained on verify's texts."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(list(TEXTS) * 10, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return tok


def seq2seq_tokenizer() -> Tokenizer:
    """A BPE with <s>=0, <pad>=1, </s>=2, <unk>=3 and two language tokens; a source ends with </s>."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    specials = ["<s>", "<pad>", "</s>", "<unk>", *LANGUAGES]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(list(TEXTS + TARGETS) * 10, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    return tok


def randomise(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # off their init, norm gains and logits biases too
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)


def seq2seq_rows(tmp: Path) -> list[str]:
    tok = seq2seq_tokenizer()
    rows = []
    for i, (family, what, cls, fields, language) in enumerate(SEQ2SEQ):
        torch.manual_seed(100 + i)
        model = cls(cls.config_class(vocab_size=tok.get_vocab_size(), **fields)).eval()
        randomise(model, 100 + i)
        if fields.get("forced_bos_token_id") is not None or language:
            model.generation_config.forced_bos_token_id = tok.token_to_id(language) if language else fields["forced_bos_token_id"]
        folder = tmp / f"s{i}-{family}"
        model.save_pretrained(folder)
        tok.save(str(folder / "tokenizer.json"))
        ckpt = load_hf_dir(folder, device="cpu")
        result = compare(folder, ckpt)
        model = cls.from_pretrained(folder).eval()  # as saved: Marian's position table is recomputed, not the noised one
        same = total = 0
        for text in TEXTS:
            ids = tok.encode(text).ids
            with torch.inference_mode():
                theirs = model.generate(torch.tensor([ids]), num_beams=1, do_sample=False, max_new_tokens=20)[0, 1:].tolist()
            theirs = theirs[: theirs.index(2)] if 2 in theirs else theirs
            same += greedy_decode(ckpt.model, ids, ckpt.decoding, max_new_tokens=20) == theirs
            total += 1
        rows.append(
            f"| {family} | {what} | {result['max_attention_diff']:.1e} | {result['max_output_diff']:.1e} | {same} of {total} |"
        )
    return rows


def main() -> None:
    print(machine())
    tok = tokenizer()
    print(f"transformers {transformers.__version__}, texts: {len(TEXTS)} (verify.TEXTS)")
    print("| family | what the config exercises | attention weights | next-token probabilities |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (family, what, cls, fields) in enumerate(CASES):
            torch.manual_seed(i)
            base = {} if family == "gpt2" else SMALL
            config = cls.config_class(vocab_size=tok.get_vocab_size(), **{**base, **fields})
            model = cls(config).eval()
            gen = torch.Generator().manual_seed(i)
            with torch.no_grad():
                for p in model.parameters():  # off their init, norm gains too
                    p.add_(torch.randn(p.shape, generator=gen) * 0.1)
            folder = Path(tmp) / f"{i}-{family}"
            model.save_pretrained(folder)
            tok.save(str(folder / "tokenizer.json"))
            result = compare(folder, load_hf_dir(folder, device="cpu"))
            print(f"| {family} | {what} | {result['max_attention_diff']:.1e} | {result['max_output_diff']:.1e} |")
        print("\nencoder-decoders (a given target text; then greedy translations against generate, up to 20 tokens):")
        print("| family | what the config exercises | attention weights | next-token probabilities | greedy equal |")
        print("|---|---|---|---|---|")
        print("\n".join(seq2seq_rows(Path(tmp))))


if __name__ == "__main__":
    main()
