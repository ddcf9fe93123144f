"""`loads`: ``json.loads`` of bytes, with the common case decoded in fewer steps.

A small get parses JSON twice (the metadata and the dataset); for ~300 bytes,
``json.loads`` spends a third of its time around the parser: detecting the encoding,
dispatching on the argument's type, matching trailing whitespace with a regex.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["loads"]

_decoder = json.JSONDecoder()
_WHITESPACE = " \t\n\r"  # what JSON allows around a value


def loads(raw: bytes) -> Any:
    """What ``json.loads(raw)`` returns, and its errors.

    Text that opens an object or an array with a non-NUL second byte is UTF-8 for
    ``json.detect_encoding``: it is decoded as ``json.loads`` would and parsed by the same
    scanner; anything else, and every document the scanner does not take whole, goes to
    ``json.loads`` itself, which then raises its own error.
    """
    first = raw[:1]
    if (first == b"{" or first == b"[") and raw[1:2] != b"\x00":
        text = raw.decode("utf-8", "surrogatepass")
        try:
            obj, end = _decoder.raw_decode(text)
        except json.JSONDecodeError:
            return json.loads(raw)  # raises it, with json.loads' own wording
        if end == len(text) or not text[end:].strip(_WHITESPACE):
            return obj
    return json.loads(raw)
