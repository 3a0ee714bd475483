"""A thread-safe LRU cache bounded by bytes, not entries: the app's traces range from kilobytes to gigabytes.

Pure Python (no Streamlit): the app holds one instance per process in a `st.cache_resource`
singleton, and tests drive it directly. The most recent entry is always kept, even when it alone is
over budget, so the trace on screen is never evicted by itself. A value is made once however many
sessions ask for it at the same moment: the first makes it, the others wait for it (`get_or_create`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class ByteLRU(Generic[V]):
    """Least-recently-used entries are dropped once the total size passes `budget` bytes (`size(value)` each)."""

    def __init__(self, budget: int, size: Callable[[V], int]):
        self.budget = budget
        self._size = size
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()  # oldest first
        self._total = 0
        self._lock = threading.Lock()
        self._making: dict[Hashable, threading.Event] = {}  # keys being made now, set when done (or failed)

    def get(self, key: Hashable) -> V | None:
        """The value for `key` (now the most recent), or None."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Hashable, value: V) -> V:
        """Store `value` as the most recent entry, then evict the oldest until within budget (keeping this one)."""
        nbytes = int(self._size(value))
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._total -= old[1]
            self._items[key] = (value, nbytes)
            self._total += nbytes
            while self._total > self.budget and len(self._items) > 1:
                _, (_, dropped) = self._items.popitem(last=False)
                self._total -= dropped
        return value

    def get_or_create(self, key: Hashable, make: Callable[[], V]) -> V:
        """The cached value, or `make()` stored and returned.

        Made outside the lock (other keys stay available), and once: a caller that finds `key` being
        made by another thread waits for that result instead of making it again. If the maker fails
        (an exception, or a session's rerun interrupting it), a waiter makes the value itself.
        """
        while True:
            with self._lock:
                item = self._items.get(key)
                if item is not None:
                    self._items.move_to_end(key)
                    return item[0]
                done = self._making.get(key)
                if done is None:
                    done = self._making[key] = threading.Event()
                    break
            done.wait()  # another thread is making it: then look again
        try:
            return self.put(key, make())
        finally:
            with self._lock:
                del self._making[key]
            done.set()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._total = 0

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._total

    def keys(self) -> list[Hashable]:
        """Keys from least to most recently used."""
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
