"""How a modern decoder runs here: a SmolLM2-135M-shaped Llama against transformers' own, and what a 0.5B model costs.

Run: `.venv/bin/python -m benchmarks.modern` (a printed table, not a test; about four minutes on an idle machine).

The model has SmolLM2-135M's shape (LlamaConfig: 30 layers, d_model 576, 9 query heads sharing 3
key/value heads, SwiGLU d_ff 1536, vocabulary 49152, tied head, rope_theta 100000), random weights,
float32, saved once with `LlamaForCausalLM.save_pretrained` into a temp folder beside a byte-level BPE
`tokenizer.json` trained on Toy English (nothing comes from the Hugging Face hub). Ours is that folder
read by `load_hf_dir`; the reference is transformers' `LlamaForCausalLM` read from the same folder
(the same weights: the table's first lines check the logits and attention weights agree). Both run
under `torch.inference_mode()` without a key/value cache (`use_cache=False`: ours keeps none), on one
torch thread as the app runs them (`server.shared.model_slot`) and on two.

- traced: `model(ids, trace=True)` against transformers' eager attention with `output_attentions=True`
  (what a transformers user runs to see the weights);
- untraced: `model(ids)` (the fused `scaled_dot_product_attention` path) against `attn_implementation="sdpa"`.

Ratios come from `benchmarks.core.paired_seconds` (the two sides alternate, after warm-up; medians).
Memory is the resident set (`VmRSS`, peak `VmHWM`) of a fresh child process that only loads and traces.
A model of Qwen2.5-0.5B's shape (2 GB in float32) is then judged and loaded in child processes, under
this server's default budget and with ATTNVIZ_MAX_MODEL_MB raised.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is built here: never ask the hub for anything

import torch  # noqa: E402

from benchmarks.core import machine, paired_seconds  # noqa: E402
from transformer.checkpoints.budget import MODEL_MB_ENV, TRACE_MB_ENV, default_budget, format_bytes  # noqa: E402
from transformer.data.toy_english import generate_corpus  # noqa: E402
from transformer.model.device import torch_threads  # noqa: E402

# SmolLM2-135M's config.json, less what changes no number (dtype, token ids, initializer_range)
SMOL = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=2048,
    rope_theta=100000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
    hidden_act="silu",
)
# Qwen2.5-0.5B's (q, k, v with biases: Qwen2Attention always has them)
QWEN = dict(
    vocab_size=151936,
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    use_sliding_window=False,
    sliding_window=32768,
    max_window_layers=24,
    hidden_act="silu",
)
LENGTHS = (128, 512)  # the target is at 128; 512 for information
THREADS = (1, 2)  # the app runs the model on 1 (server/shared.py THREADS_PER_RUN)
RAISED_MODEL_MB = "2500"
MB = 1e6


def repeats_for(T: int) -> int:
    return {128: 10, 512: 5}.get(T, 3)


# ---------------------------------------------------------------------------------------------
# The folders: random weights saved as transformers saves them, and a tokenizer.json.
# ---------------------------------------------------------------------------------------------


def write_tokenizer(path: Path, vocab_size: int = 8000) -> Path:
    """A byte-level BPE (GPT-2 / SmolLM2 style, `<|endoftext|>` its one special token) trained on Toy English."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([s.text for s in generate_corpus(3000, 0)], trainer=trainer)
    tok.save(str(path))
    return path


def write_hf_folder(folder: Path, family: str, seed: int = 0) -> Path:
    """`folder` holding a random-weight model of SMOL's ("llama") or QWEN's ("qwen2") shape, as save_pretrained writes it."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_cls, model_cls, fields = {
        "llama": (LlamaConfig, LlamaForCausalLM, SMOL),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM, QWEN),
    }[family]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**fields)).eval()
    model.save_pretrained(folder)
    del model
    gc.collect()
    write_tokenizer(folder / "tokenizer.json")
    return folder


def reference(folder: Path, attention: str):
    """transformers' own model read from `folder` ("eager" or "sdpa" attention), eval mode, float32."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, attn_implementation=attention, dtype=torch.float32).eval()


def ids_of(T: int, vocab: int = SMOL["vocab_size"]) -> torch.Tensor:
    return torch.randint(0, vocab, (1, T), generator=torch.Generator().manual_seed(T))


# ---------------------------------------------------------------------------------------------
# Speed: ours against transformers, in this process.
# ---------------------------------------------------------------------------------------------


@torch.inference_mode()
def agreement(ours, eager, sdpa) -> tuple[float, float, float]:
    """max |Δ| of the traced logits and attention weights against eager's, and of the untraced logits against sdpa's."""
    ids = ids_of(128)
    logits, trace = ours(ids, trace=True)
    theirs = eager(ids, output_attentions=True, use_cache=False)
    weights = max((trace.decoder.layers[i].self_attn.weights - a).abs().max().item() for i, a in enumerate(theirs.attentions))
    fast = (ours(ids)[0] - sdpa(ids, use_cache=False).logits).abs().max().item()
    return (logits - theirs.logits).abs().max().item(), weights, fast


@torch.inference_mode()
def speed(ours, eager, sdpa) -> list[tuple[str, int, int, float, float, float]]:
    rows = []
    for what, theirs, mine in (
        ("traced", lambda ids: eager(ids, output_attentions=True, use_cache=False), lambda ids: ours(ids, trace=True)),
        ("untraced", lambda ids: sdpa(ids, use_cache=False), lambda ids: ours(ids)),
    ):
        for T in LENGTHS:
            ids = ids_of(T)
            for n in THREADS:
                with torch_threads(n):
                    t_theirs, t_ours, ratio = paired_seconds(lambda: theirs(ids), lambda: mine(ids), repeats_for(T))
                rows.append((what, T, n, t_ours, t_theirs, ratio))
    return rows


# ---------------------------------------------------------------------------------------------
# Memory: fresh child processes.
# ---------------------------------------------------------------------------------------------


def rss() -> tuple[int, int]:
    """(resident, peak resident) bytes of this process, from /proc/self/status."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def child_memory(folder: Path) -> dict:
    """In a fresh process: RSS after imports, after load_hf_dir, after one traced forward at 128 tokens (kept), and peaks."""
    from transformer.checkpoints.importers import load_hf_dir

    out = {"imports": rss()}
    t0 = time.perf_counter()
    ckpt = load_hf_dir(folder, device="cpu")
    out["load_s"] = time.perf_counter() - t0
    out["loaded"] = rss()
    with torch.inference_mode(), torch_threads(1):
        _, trace = ckpt.model(ids_of(128), trace=True)
    out["traced"] = rss()
    out["trace_bytes"] = trace.nbytes()
    del trace
    gc.collect()
    out["after"] = rss()
    out["max_len"] = ckpt.config.max_len
    out["model_bytes"] = sum(p.numel() * p.element_size() for p in ckpt.model.parameters())
    return out


def child_large(folder: Path) -> dict:
    """In a fresh process: judge and load a large folder under the budget of this environment."""
    from transformer.checkpoints.format import CheckpointError
    from transformer.checkpoints.importers import judge_folder, load_hf_dir

    budget = default_budget()
    out = {"budget": [budget.model_bytes, budget.trace_bytes], "imports": rss()}
    t0 = time.perf_counter()
    try:
        judge_folder(folder)
    except CheckpointError as e:
        out.update(refused=str(e), judge_s=time.perf_counter() - t0)
        return out
    t0 = time.perf_counter()
    try:
        ckpt = load_hf_dir(folder, device="cpu")
    except CheckpointError as e:
        out.update(refused=f"(judge_folder passed) {e}")
        return out
    out["load_s"] = time.perf_counter() - t0
    out["loaded"] = rss()
    out["max_len"] = ckpt.config.max_len
    out["context"] = ckpt.training.get("context")
    with torch.inference_mode(), torch_threads(1):
        ids = ids_of(128, ckpt.config.vocab_size)
        ckpt.model(ids, trace=True)  # warm-up
        t0 = time.perf_counter()
        _, trace = ckpt.model(ids, trace=True)
        out["trace_128_s"] = time.perf_counter() - t0
    out["traced"] = rss()
    out["trace_bytes"] = trace.nbytes()
    return out


def in_child(flag: str, folder: Path, env: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.modern", flag, str(folder)], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"child {flag} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def without_budget_overrides() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in (MODEL_MB_ENV, TRACE_MB_ENV)}


# ---------------------------------------------------------------------------------------------
# The table.
# ---------------------------------------------------------------------------------------------


def mb(n: float) -> str:
    return f"{n / MB:,.0f} MB"


def print_speed(rows) -> None:
    targets = {"traced": 1.3, "untraced": 1.1}
    print(f"{'forward':>9} {'tokens':>7} {'threads':>8} {'ours ms':>9} {'transformers ms':>16} {'ratio':>7}  target")
    for what, T, n, t_ours, t_theirs, ratio in rows:
        target = f"<= {targets[what]:.2f}x" if T == 128 else "(information)"
        met = "" if T != 128 else ("  met" if ratio <= targets[what] else "  MISSED")
        print(f"{what:>9} {T:>7} {n:>8} {t_ours * 1e3:>9.1f} {t_theirs * 1e3:>16.1f} {ratio:>6.2f}x  {target}{met}")


def print_memory(m: dict) -> None:
    print(f"{'after imports (torch, transformer)':<48} RSS {mb(m['imports'][0]):>9}")
    print(
        f"{'after load_hf_dir (' + format(m['load_s'], '.1f') + ' s)':<48} RSS {mb(m['loaded'][0]):>9}   "
        f"peak so far {mb(m['loaded'][1]):>9}   (weights {mb(m['model_bytes'])})"
    )
    print(
        f"{'after one traced forward, 128 tokens (kept)':<48} RSS {mb(m['traced'][0]):>9}   "
        f"peak so far {mb(m['traced'][1]):>9}   (trace.nbytes {mb(m['trace_bytes'])})"
    )
    print(f"{'after dropping the trace':<48} RSS {mb(m['after'][0]):>9}")


def print_large(label: str, r: dict) -> None:
    budget = f"model {format_bytes(r['budget'][0])}, trace {format_bytes(r['budget'][1])}"
    if "refused" in r:
        print(f"{label} (budget: {budget}): refused by judge_folder in {r.get('judge_s', 0):.2f} s:\n    {r['refused']}")
        return
    print(
        f"{label} (budget: {budget}): loaded in {r['load_s']:.1f} s; RSS {mb(r['loaded'][0])}, peak {mb(r['loaded'][1])}; "
        f"max_len the app reads {r['max_len']:,} ({r['context'] or 'its whole context'})"
    )
    print(
        f"    one traced forward at 128 tokens (1 thread): {r['trace_128_s']:.2f} s, trace.nbytes {mb(r['trace_bytes'])}; "
        f"RSS then {mb(r['traced'][0])}, peak {mb(r['traced'][1])}"
    )


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] in ("--memory", "--large"):  # the child processes
        result = (child_memory if sys.argv[1] == "--memory" else child_large)(Path(sys.argv[2]))
        print(json.dumps(result))
        return
    import transformers

    from transformer.checkpoints.importers import load_hf_dir

    t_start = time.perf_counter()
    print(f"machine: {machine()}, load average {os.getloadavg()[0]:.2f} at start; transformers {transformers.__version__}")
    with tempfile.TemporaryDirectory(prefix="attnviz-modern-") as tmp:
        smol = write_hf_folder(Path(tmp) / "smol", "llama")
        ours = load_hf_dir(smol, device="cpu").model
        cfg = ours.cfg
        print(
            f"model: SmolLM2-135M's shape (LlamaConfig: {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads, "
            f"{cfg.kv_heads} kv heads, d_ff {cfg.d_ff}, vocab {cfg.vocab_size}, tied), random weights, float32, "
            f"{ours.n_params():,} parameters; read by load_hf_dir (max_len {cfg.max_len})"
        )
        eager, sdpa = reference(smol, "eager"), reference(smol, "sdpa")
        d_logits, d_weights, d_fast = agreement(ours, eager, sdpa)
        print(
            f"same weights: max |Δ| at 128 tokens, traced logits {d_logits:.2e}, attention weights {d_weights:.2e} "
            f"(vs eager); untraced logits {d_fast:.2e} (vs sdpa)"
        )

        print("\nours vs transformers' LlamaForCausalLM, batch 1, inference_mode, use_cache=False")
        print("traced: trace=True vs eager + output_attentions=True; untraced: our SDPA path vs attn_implementation='sdpa'")
        print_speed(speed(ours, eager, sdpa))
        del ours, eager, sdpa
        gc.collect()

        print("\nmemory, a fresh process (RSS = VmRSS, peak = VmHWM of /proc/self/status)")
        print_memory(in_child("--memory", smol, dict(os.environ)))

        print("\na model of Qwen2.5-0.5B's shape (Qwen2Config: 24 layers, d_model 896, 14 heads, 2 kv heads, d_ff 4864,")
        print("vocab 151936, tied, q/k/v biases), random weights saved as float32; fresh processes")
        sys.stdout.flush()
        t0 = time.perf_counter()
        qwen = write_hf_folder(Path(tmp) / "qwen", "qwen2")
        size = sum(f.stat().st_size for f in qwen.iterdir())
        print(f"(folder written in {time.perf_counter() - t0:.0f} s, {mb(size)})")
        print_large("default budget", in_child("--large", qwen, without_budget_overrides()))
        raised = {**without_budget_overrides(), MODEL_MB_ENV: RAISED_MODEL_MB}
        print_large(f"{MODEL_MB_ENV}={RAISED_MODEL_MB}", in_child("--large", qwen, raised))
    print(f"\ntotal benchmark time {time.perf_counter() - t_start:.0f} s, load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
