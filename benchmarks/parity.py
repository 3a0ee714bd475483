"""The README's parity table: each supported Hugging Face family against `transformers` itself.

Run: `.venv/bin/python -m benchmarks.parity` (needs the dev requirements; about a minute). For each family a
small model with random weights is built with transformers' own class from a config that exercises what
is new in it (grouped-query attention, a sliding window shorter than the text, partial rotary, rope
scaling, q/k norms, biases, tied or untied), saved with `save_pretrained` beside a tokenizer.json trained
here, imported by our `load_hf_dir`, and compared by `transformer.checkpoints.verify.compare` (float32,
transformers' eager attention): the largest difference of every layer's attention weights and of the
output distribution, over verify's three texts. Nothing is downloaded.
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
from transformer.checkpoints.importers import load_hf_dir
from transformer.checkpoints.verify import TEXTS, compare

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


if __name__ == "__main__":
    main()
