"""Entry-point module of butler-s3: declarations only, nothing heavy is imported."""

from __future__ import annotations

from butler import StorageSpec, hookimpl


@hookimpl
def butler_storages() -> list[StorageSpec]:
    return [
        StorageSpec(
            "s3",
            ("s3",),
            "butler_s3._storage:S3Storage",
            "Amazon S3 and S3-compatible object stores (conditional PUT, multipart, s3fs)",
        )
    ]
