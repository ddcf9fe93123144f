"""The security suites reuse the reliability suites' fresh repository on every storage."""

from __future__ import annotations

from ..reliability.conftest import shared_root, storage_root

__all__ = ["shared_root", "storage_root"]
