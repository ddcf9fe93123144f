"""Discovery of butler-hdf5: declared through entry points, importing nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("butler_hdf5", reason="butler-hdf5 is not installed")

import butler

HEAVY = ["h5py", "numpy", "astropy", "s3fs", "botocore", "sqlalchemy"]


def test_discovery_imports_nothing_heavy() -> None:
    script = textwrap.dedent(
        f"""
        import json, sys
        import butler
        registry = butler.default_registry()
        fmt = registry.format("hdf5")
        info = [p for p in butler.plugins() if p.name == "hdf5"]
        print(json.dumps({{
            "heavy": [m for m in {HEAVY!r} if m in sys.modules],
            "extensions": list(fmt.extensions),
            "status": [p.status for p in info],
            "distribution": [p.distribution for p in info],
        }}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["heavy"] == []
    assert found["extensions"] == [".h5", ".hdf5", ".he5"]
    assert found["distribution"] == ["butler-hdf5"]
    assert found["status"] == ["loaded"]


def test_format_descriptor() -> None:
    fmt = butler.default_registry().format("hdf5")
    assert fmt.magic == b"\x89HDF\r\n\x1a\n"
    assert fmt.matches_bytes(b"\x89HDF\r\n\x1a\n\0\0\0")
    assert not fmt.matches_bytes(b"SIMPLE  =")
    registry = butler.default_registry()  # names are identified there, by the longest extension
    assert registry.identify_format("x.he5") == registry.identify_format("X.HDF5") == "hdf5"


@pytest.mark.parametrize("storage", ["posix", "memory", "s3", "database"])
def test_serializers_registered(storage: str) -> None:
    import numpy as np

    registry = butler.default_registry()
    for cls in (np.ndarray, dict):
        found = registry.find(cls, storage, "hdf5")
        assert found.distribution == "butler-hdf5"
        reader = "read"  # one reader for every storage (issue 14 item 3)
        assert repr(found).count(f":{reader}'") == 1
