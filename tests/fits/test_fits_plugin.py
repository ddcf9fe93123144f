"""Discovery of butler-fits: cheap (no astropy/numpy imported), complete declarations."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("butler_fits", reason="butler-fits is not installed")

import butler

HEAVY = ("astropy", "numpy", "s3fs", "botocore", "h5py", "sqlalchemy")


def test_discovery_imports_nothing_heavy() -> None:
    code = f"""
import json, sys
import butler
registry = butler.default_registry()
info = [p for p in butler.plugins() if p.distribution == "butler-fits"]
print(json.dumps({{
    "heavy": sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r}),
    "status": [p.status for p in info],
    "fits": sorted("|".join(k) for k in registry.serializers if k[2] == "fits"),
    "format": "fits" in registry.formats,
}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [], result["heavy"]
    assert result["status"] == ["loaded"]
    assert result["format"]
    assert "numpy.ndarray|*|fits" in result["fits"]
    assert "astropy.table.Table|*|fits" in result["fits"]
    assert "butler_fits._abc.FitsReadWritable|*|fits" in result["fits"]


def test_declarations() -> None:
    registry = butler.default_registry()
    keys = set(registry.serializers)
    for python_type in (
        "numpy.ndarray",
        "astropy.table.Table",
        "astropy.io.fits.HDUList",
        "astropy.io.fits.Header",
        "astropy.nddata.CCDData",
        "butler_fits._abc.FitsReadWritable",
    ):
        assert (python_type, "*", "fits") in keys
        assert registry.serializers[(python_type, "*", "fits")].distribution == "butler-fits"
    for python_type in ("numpy.ndarray", "astropy.table.Table", "astropy.io.fits.HDUList"):
        # one reader per type for every storage: no per-storage copies (issue 14 item 3)
        assert (python_type, "posix", "fits") not in keys
        assert (python_type, "s3", "fits") not in keys
    descriptor = registry.format("fits")
    assert descriptor.magic == b"SIMPLE  ="
    assert descriptor.distribution == "butler-fits"


def test_lookup_prefers_storage_specific_and_subclasses() -> None:
    import numpy as np
    from astropy.table import QTable

    registry = butler.default_registry()
    assert registry.find(np.ndarray, "posix", "fits").read_ref == "butler_fits._image:read"
    assert registry.find(np.ndarray, "memory", "fits").read_ref.endswith(":read")
    assert registry.find(QTable, "memory", "fits").python_type == "astropy.table.Table"
    assert registry.find(np.ma.MaskedArray, "posix", "fits").python_type == "numpy.ndarray"
