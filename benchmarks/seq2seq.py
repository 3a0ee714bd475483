"""A translator of opus-mt-en-de's shape here: greedy translation and its full trace against transformers', and the
cross-attention page in a real browser.

Run: `.venv/bin/python -m benchmarks.seq2seq` (a printed table, not a test; a few minutes on an idle machine).

The model has Helsinki-NLP/opus-mt-en-de's shape (MarianConfig: 6 + 6 layers, d_model 512, 8 heads, d_ff
2048, vocabulary 58 101, sinusoidal positions, scaled embeddings, final_logits_bias, bad_words_ids [[pad]])
with random weights, float32, saved by `MarianMTModel.save_pretrained` beside a tokenizer.json trained on
Toy English (nothing comes from the Hugging Face hub). Its generation config says max_length 26: a random
model never says EOS, and a real translation of a 25-token sentence is about that long. Ours is the folder
read by `load_hf_dir`; the reference is transformers' `MarianMTModel` from the same folder (the table's
first line checks both translate to the same tokens and their attention weights agree).

- ours: `api.streams` (greedy, one new position a step, reading the cached keys and values) then
  `api.trace_text` (every layer's q, k, v, scores, weights of the three kinds) — what the app does for a
  typed sentence;
- transformers: `generate(num_beams=1, do_sample=False)` (with its key/value cache), then one forward with
  `output_attentions=True` on the translation — what a transformers user runs to see the same weights.

Ratios come from `benchmarks.core.paired_seconds` (the two sides alternate, after warm-up; medians), on one
torch thread as the app runs them and on two. The browser part serves the converted model under the
catalogue slot `benchmarks.browser.BIG` and times typing on the Attention page with the cross-attention
kind, as `benchmarks.browser.typing` times it (key press to the new heatmap's data in the page).
"""

from __future__ import annotations

import gc
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is built here: never ask the hub for anything

import torch  # noqa: E402

from benchmarks.browser import BIG, pct, typing  # noqa: E402
from benchmarks.core import machine, paired_seconds  # noqa: E402
from transformer.data.toy_english import generate_corpus  # noqa: E402
from transformer.model.device import torch_threads  # noqa: E402

# Helsinki-NLP/opus-mt-en-de's config.json, less what changes no number
OPUS_MT_EN_DE = dict(
    vocab_size=58101, decoder_vocab_size=58101, d_model=512, encoder_layers=6, decoder_layers=6,
    encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048,
    max_position_embeddings=512, scale_embedding=True, activation_function="swish", static_position_embeddings=True,
    pad_token_id=58100, decoder_start_token_id=58100, eos_token_id=0, forced_eos_token_id=0,
    share_encoder_decoder_embeddings=True, normalize_embedding=False,
)  # fmt: skip
SOURCE_TOKENS = 25
NEW_TOKENS = 25  # the generation config's max_length 26: the start token and 25 more
THREADS = (1, 2)
REPEATS = 5
TYPING = 9  # texts typed on the Attention page (the first opens the page): p50 of 8
TARGETS = {"ratio": 1.3, "typing": 1.5}


def write_tokenizer(path: Path) -> Path:
    """A SentencePiece-like BPE over Toy English with Marian's specials: </s>=0, <unk>=1, <pad> last, "$A </s>"."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=4000, special_tokens=["</s>", "<unk>"], show_progress=False)
    tok.train_from_iterator([s.text for s in generate_corpus(3000, 0)], trainer=trainer)
    tok.add_special_tokens(["<pad>"])  # Marian's pad is its last id; ours is below the config's 58 101
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 0)])
    tok.save(str(path))
    return path


def write_folder(folder: Path, seed: int = 0) -> Path:
    from transformers import MarianConfig, MarianMTModel

    torch.manual_seed(seed)
    model = MarianMTModel(MarianConfig(**OPUS_MT_EN_DE)).eval()
    model.generation_config.max_length = 1 + NEW_TOKENS
    model.generation_config.bad_words_ids = [[OPUS_MT_EN_DE["pad_token_id"]]]
    model.generation_config.num_beams = 1
    model.save_pretrained(folder)
    del model
    gc.collect()
    write_tokenizer(folder / "tokenizer.json")
    return folder


def source_text(tokenizer, n_tokens: int = SOURCE_TOKENS) -> str:
    """A Toy English text of exactly n_tokens tokens (its </s> included), the first that fits."""
    words = " ".join(s.text for s in generate_corpus(200, 7)).split()
    for end in range(1, len(words)):
        if len(tokenizer.encode(" ".join(words[:end])).ids) == n_tokens:
            return " ".join(words[:end])
    raise RuntimeError(f"no prefix of the corpus is {n_tokens} tokens long")


def in_process(folder: Path) -> list[str]:
    from transformers import MarianMTModel

    from transformer import api
    from transformer.checkpoints.importers import load_hf_dir

    ckpt = load_hf_dir(folder, device="cpu")
    ref = MarianMTModel.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()
    text = source_text(ckpt.tokenizer)
    ids = torch.tensor([ckpt.tokenizer.encode(text).ids])

    def ours():
        tokens = api.streams(ckpt, text)
        return api.trace_text(ckpt, text, tokens=tokens)

    def theirs():
        out = ref.generate(ids, num_beams=1, do_sample=False)
        return out, ref(input_ids=ids, decoder_input_ids=out, output_attentions=True)

    with torch.inference_mode():
        trace = ours()
        out, forward = theirs()
    translated = list(trace.target.ids[1:])
    same = translated == [t for t in out[0, 1:].tolist() if t not in ckpt.decoding.eos]
    rows = len(trace.target.ids)  # generate's output may end with the EOS, which our decoder never reads
    cross = max(
        (trace.attention("cross", i).weights - forward.cross_attentions[i][:, :, :rows]).abs().max().item() for i in range(6)
    ) if same else float("nan")  # fmt: skip
    lines = [
        f"source {len(ids[0])} tokens, translation {len(translated)} tokens; ours and generate's tokens "
        f"{'are the same' if same else 'DIFFER'}; cross-attention weights differ by at most {cross:.1e}",
        f"trace: {trace.nbytes() / 1e6:.1f} MB",
    ]
    for n in THREADS:
        with torch.inference_mode(), torch_threads(n):
            t_theirs, t_ours, ratio = paired_seconds(theirs, ours, REPEATS)
        verdict = "met" if ratio <= TARGETS["ratio"] else "MISSED"
        lines.append(
            f"greedy + full trace, {n} thread{'s' if n > 1 else ''}: ours {t_ours:.3f} s, transformers {t_theirs:.3f} s, "
            f"ratio {ratio:.2f} (target ≤ {TARGETS['ratio']:g}: {verdict})"
        )
    return lines


def in_browser(folder: Path, assets: Path) -> list[str]:
    from playwright.sync_api import sync_playwright

    from benchmarks.modern_browser import convert
    from tests.browser import CHROMIUM, launch_chromium, serve
    from transformer.checkpoints import catalog
    from transformer.checkpoints.importers import load_hf_dir

    seconds, said = convert(folder, assets / catalog.SHIPPED[BIG][1])
    tok = load_hf_dir(folder, device="cpu").tokenizer
    words = " ".join(s.text for s in generate_corpus(400, 11)).split()
    texts = []
    for i in range(TYPING):  # different texts of about SOURCE_TOKENS tokens
        chunk = words[i * 40 :]
        end = max(e for e in range(1, 40) if len(tok.encode(" ".join(chunk[:e])).ids) <= SOURCE_TOKENS)
        texts.append(" ".join(chunk[:end]))
    env = {catalog.ASSETS_ENV: str(assets), catalog.NO_MINILM_ENV: "1"}
    with serve("app.py", env) as (base, _), sync_playwright() as pw:
        browser = launch_chromium(pw)
        times = typing(browser, base, BIG, texts, timeout_ms=300_000, kind="cross")
        browser.close()
    verdict = "met" if statistics.median(times) <= TARGETS["typing"] else "MISSED"
    version = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip()
    return [
        f"converted in {seconds:.1f} s: {said}",
        f"browser: {version}",
        f"type a sentence → cross-attention heatmap drawn (Attention page, ~{SOURCE_TOKENS} source tokens, the translation "
        f"{NEW_TOKENS} tokens)   p50 {statistics.median(times):.2f} s   p90 {pct(times, 0.9):.2f} s   max {max(times):.2f} s   "
        f"(n={len(times)}; target p50 ≤ {TARGETS['typing']:g} s: {verdict})",
    ]


def main() -> None:
    print(f"machine: {machine()}, load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory(prefix="attnviz-seq2seq-") as tmp:
        folder = write_folder(Path(tmp) / "opus-mt-en-de-shaped")
        print("\n".join(in_process(folder)), flush=True)
        gc.collect()
        assets = Path(tmp) / "assets"
        assets.mkdir()
        from transformer.checkpoints import catalog

        for name, (_, file) in catalog.SHIPPED.items():
            if name != BIG and (catalog.ASSETS / file).is_file():
                (assets / file).symlink_to(catalog.ASSETS / file)
        print("\n".join(in_browser(folder, assets)))


if __name__ == "__main__":
    main()
