"""The model: its config, the attention math, the layers, the network, and the trace a forward returns.

- `config.py`: `ModelConfig`, one frozen dataclass that fully describes an architecture
- `attention.py`: multi-head attention written out step by step (the Q, K, V page's math), and the fused path
- `layers.py`: encoder and decoder layers around the residual stream
- `network.py`: `TransformerModel` (encoder-decoder, encoder classifier, decoder LM) built from one config
- `trace.py`: what one forward computed, as frozen dataclasses
- `device.py`: which device and how many torch threads a model runs on
"""
