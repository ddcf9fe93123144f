"""butler-s3 is found through the ``butler`` entry points without importing s3fs or boto."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("butler_s3", reason="butler-s3 is not installed")

import butler


def test_discovery_imports_nothing_heavy() -> None:
    code = textwrap.dedent(
        """
        import sys
        import butler
        registry = butler.default_registry()
        spec = registry.storage_spec_for_scheme("s3", "s3://bucket/prefix")
        assert spec.type_name == "s3", spec
        assert spec.cls == "butler_s3._storage:S3Storage", spec.cls
        import butler_s3
        heavy = sorted(
            m for m in ("s3fs", "botocore", "aiobotocore", "boto3", "fsspec", "aiohttp")
            if m in sys.modules
        )
        print(heavy)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_plugin_is_listed_as_loaded() -> None:
    rows = [p for p in butler.plugins() if p.distribution == "butler-s3"]
    assert [(p.name, p.module, p.status) for p in rows] == [("s3", "butler_s3._plugin", "loaded")]


def test_storage_spec_resolves_to_s3storage() -> None:
    from butler_s3 import S3Storage

    spec = butler.default_registry().storage_spec_for_scheme("s3", "s3://b/p")
    assert spec.load() is S3Storage
    assert S3Storage.type_name == "s3"
    assert S3Storage.schemes == ("s3",)
    assert S3Storage.has_local_paths is False
