"""Small algorithmic seq2seq tasks (copy, reverse, sort, addition) for quick demos.

Every example is (source_text, target_text) with single-character tokens separated by spaces,
e.g. sort: ("3 1 2", "1 2 3"), addition: ("4 7 + 9 5", "1 4 2").
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable

LETTERS = string.ascii_lowercase
DIGITS = string.digits


def _sequences(n: int, seed: int, min_len: int, max_len: int, alphabet: str) -> list[list[str]]:
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    rng = random.Random(seed)
    return [rng.choices(alphabet, k=rng.randint(min_len, max_len)) for _ in range(n)]


def copy_examples(n: int, seed: int, min_len: int = 3, max_len: int = 10, alphabet: str = LETTERS) -> list[tuple[str, str]]:
    """Target = source."""
    return [(" ".join(s), " ".join(s)) for s in _sequences(n, seed, min_len, max_len, alphabet)]


def reverse_examples(n: int, seed: int, min_len: int = 3, max_len: int = 10, alphabet: str = LETTERS) -> list[tuple[str, str]]:
    """Target = source reversed."""
    return [(" ".join(s), " ".join(reversed(s))) for s in _sequences(n, seed, min_len, max_len, alphabet)]


def sort_examples(n: int, seed: int, min_len: int = 3, max_len: int = 10, alphabet: str = DIGITS) -> list[tuple[str, str]]:
    """Target = source sorted (character order, so digits sort numerically)."""
    return [(" ".join(s), " ".join(sorted(s))) for s in _sequences(n, seed, min_len, max_len, alphabet)]


def addition_examples(n: int, seed: int, min_len: int = 1, max_len: int = 3) -> list[tuple[str, str]]:
    """Target = the digits of a + b; min_len/max_len bound the digit count of each operand."""
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    rng = random.Random(seed)

    def number() -> int:
        k = rng.randint(min_len, max_len)
        # No leading zeros: a k-digit number lies in [10^(k-1), 10^k), except 1-digit numbers include 0.
        return rng.randint(0 if k == 1 else 10 ** (k - 1), 10**k - 1)

    examples = []
    for _ in range(n):
        a, b = number(), number()
        examples.append((f"{' '.join(str(a))} + {' '.join(str(b))}", " ".join(str(a + b))))
    return examples


TASKS: dict[str, Callable[..., list[tuple[str, str]]]] = {
    "copy": copy_examples,
    "reverse": reverse_examples,
    "sort": sort_examples,
    "addition": addition_examples,
}
