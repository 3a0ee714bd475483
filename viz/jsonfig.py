"""Read a Plotly figure's JSON back into numpy, as a browser would (base64 typed arrays decoded): for tests and notebooks."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np


def decode(value: Any) -> Any:
    """Turn every `{"dtype", "bdata", "shape"}` typed array in a parsed figure into a numpy array, at any depth."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if isinstance(value.get("bdata"), str) and isinstance(value.get("dtype"), str):
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]).newbyteorder("<"))
        shape = value.get("shape")
        if shape:
            dims = shape if isinstance(shape, list) else [int(s) for s in str(shape).split(",")]
            array = array.reshape(dims)
        return array
    return {k: decode(v) for k, v in value.items()}


def parse(spec: str) -> dict:
    """A figure's JSON string (e.g. `fig.to_json()` or Streamlit's `plotly_chart.proto.spec`) as decoded dicts."""
    return decode(json.loads(spec))
