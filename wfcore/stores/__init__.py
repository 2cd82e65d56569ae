"""Storage backends: the Store interface and the built-in SQLite and memory stores."""

from .base import Store
from .memory import MemoryStore
from .sqlite import SQLiteStore

__all__ = ["MemoryStore", "SQLiteStore", "Store"]
