"""A Transformer written from scratch in PyTorch whose every layer and head can be traced.

from transformer import load_checkpoint, trace_text
ckpt = load_checkpoint("assets/translator.safetensors")
trace = trace_text(ckpt, "the dog that the cats see runs .")
trace.head("cross", layer=1, head=0)["weights"]        # (target tokens, source tokens)
trace.named_tensors()["decoder.layers.1.cross_attn.weights"]
"""

from transformer.api import attention_maps, build_model, greedy_decode, pool_trace, streams, trace_text
from transformer.checkpoints.format import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from transformer.checkpoints.tokenizer import Tokenizer, train_tokenizer
from transformer.model.config import ConfigError, ModelConfig
from transformer.model.device import pick_device
from transformer.model.network import TransformerModel
from transformer.model.trace import AttentionMaps, AttentionTrace, LayerTrace, StackTrace, Stream, Trace

__all__ = [
    "AttentionMaps",
    "AttentionTrace",
    "Checkpoint",
    "CheckpointError",
    "ConfigError",
    "LayerTrace",
    "ModelConfig",
    "StackTrace",
    "Stream",
    "Tokenizer",
    "Trace",
    "TransformerModel",
    "attention_maps",
    "build_model",
    "greedy_decode",
    "load_checkpoint",
    "pick_device",
    "pool_trace",
    "save_checkpoint",
    "streams",
    "trace_text",
    "train_tokenizer",
]
