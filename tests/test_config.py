"""Config invariants fail early with a message that says what to fix; the device choice follows the user."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from transformer.model.config import ConfigError, ModelConfig
from transformer.model.device import ENV_VAR, pick_device


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "seq2seq"}, "kind must be one of ('encoder-decoder', 'encoder', 'decoder'), got 'seq2seq'"),
        ({"positional": "rotary"}, "positional must be one of ('sinusoidal', 'learned', 'rope', 'relative'), got 'rotary'"),
        ({"activation": "swish"}, "activation must be one of ('relu', 'gelu', 'gelu_tanh', 'silu'), got 'swish'"),
        ({"n_heads": 0}, "n_heads must be a positive integer, got 0"),
        ({"n_layers": True}, "n_layers must be a positive integer, got True"),
        ({"vocab_size": 100.0}, "vocab_size must be a positive integer, got 100.0"),
        ({"max_len": -5}, "max_len must be a positive integer, got -5"),
        ({"d_model": 100, "n_heads": 8}, "d_model (100) must be divisible by n_heads (8), or head_dim given"),
        ({"dropout": 1.0}, "dropout must be in [0, 1), got 1.0"),
        ({"dropout": -0.1}, "dropout must be in [0, 1), got -0.1"),
        ({"layer_norm_eps": 0.0}, "layer_norm_eps must be positive, got 0.0"),
        ({"pad_id": 1000}, "pad_id 1000 is outside the vocabulary (size 1000)"),
        ({"n_classes": -1}, "n_classes and n_token_types must be >= 0"),
        ({"n_classes": 2}, "only the encoder kind has a classification head (n_classes=2, kind='encoder-decoder')"),
        ({"kind": "encoder", "n_classes": 2, "class_names": ("a",)}, "class_names has 1 names for 2 classes"),
    ],
)
def test_invalid_configs_raise_config_error_with_a_clear_message(fields, message):
    with pytest.raises(ConfigError) as info:
        ModelConfig(**fields)
    assert message in str(info.value)


def test_json_round_trip_and_derived_properties():
    cfg = ModelConfig(kind="encoder", n_classes=2, class_names=("no", "yes"), d_model=96, n_heads=6, norm_first=False)
    again = ModelConfig.from_json(cfg.to_json())
    # Its floats too (dropout, layer_norm_eps): JSON writes the shortest repr, which reads back as the same float.
    assert again == cfg and again.class_names == ("no", "yes")  # a JSON list comes back as a tuple
    assert hash(again) == hash(cfg)
    assert cfg.d_head == 16
    assert cfg.attention_kinds == ("encoder self",)
    assert (cfg.has_encoder, cfg.has_decoder, cfg.has_final_norm) == (True, False, False)
    assert ModelConfig(norm_first=False, final_norm=True).has_final_norm
    assert ModelConfig().attention_kinds == ("encoder self", "decoder self", "cross")
    assert ModelConfig(kind="decoder").attention_kinds == ("decoder self",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.n_layers = 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "config is not valid JSON"),
        ("[1, 2]", "config must be a JSON object, got list"),
        ('{"n_layers": 2, "moe": true, "experts": 4}', "unknown config field(s): experts, moe"),
        ('{"dropout": "high"}', "invalid config"),
        ('{"n_heads": 5}', "d_model (128) must be divisible by n_heads (5), or head_dim given"),
    ],
)
def test_from_json_raises_config_error(text, message):
    with pytest.raises(ConfigError) as info:
        ModelConfig.from_json(text)
    assert message in str(info.value)


def test_from_dict_accepts_a_subset_of_fields():
    assert ModelConfig.from_dict(json.loads('{"kind": "decoder", "n_layers": 3}')) == ModelConfig(kind="decoder", n_layers=3)


def test_pick_device_honours_the_argument_over_the_environment(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "cuda:7")
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(torch.device("meta")) == torch.device("meta")


def test_pick_device_honours_attnviz_device_cpu(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "cpu")
    assert pick_device() == torch.device("cpu")
    monkeypatch.setenv(ENV_VAR, "meta")  # any valid device name is taken as given
    assert pick_device() == torch.device("meta")


def test_pick_device_defaults_to_the_best_available(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert pick_device().type == expected
    monkeypatch.setenv(ENV_VAR, "")  # set but empty: as if unset
    assert pick_device().type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_cuda_says_so(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "cuda")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        pick_device()
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        pick_device("cuda:0")
