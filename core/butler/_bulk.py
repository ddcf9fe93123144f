"""`Butler`'s bulk calls (a mixin): many gets or puts at once, concurrently."""

from __future__ import annotations

__all__ = ["BulkMixin"]


class BulkMixin:
    """Bulk reads and writes for `Butler`."""
