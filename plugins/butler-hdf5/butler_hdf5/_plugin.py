"""Entry point of butler-hdf5: declarations only, naming callables by strings.

Nothing heavy is imported here (no h5py, numpy or astropy), so discovering the plugin is
free; each serializer module is imported the first time a dataset of its kind is touched.
"""

from __future__ import annotations

from butler import ComponentReader, FormatDescriptor, Serializer, hookimpl

from . import FORMAT, HDF5_MAGIC

__all__ = [
    "PARAMETERS",
    "SERIALIZER_ARGS",
    "butler_components",
    "butler_formats",
    "butler_serializers",
]

#: python type (dotted name) -> module implementing ``write`` and ``read`` (one reader for
#: every storage: ``h5py_.open_read`` picks a path or a file object with read hints
#: through the Storage contract). ``astropy.table.Table`` is matched only once astropy is
#: imported, so the serializer is active exactly where astropy is installed and in use.
_TYPES = {
    "numpy.ndarray": "butler_hdf5._arrays",
    "builtins.dict": "butler_hdf5._mapping",
    "astropy.table.Table": "butler_hdf5._table",
    "astropy.io.fits.HDUList": "butler_hdf5._hdulist",
}

#: Read hints for the storage (`butler.storage.ReadHints`; S3 uses them for ranged reads):
#: serializer arguments, and read parameters overriding them.
READ_ARGS = ("block_size", "cache_type", "cache_blocks")

#: Serializer arguments passed to h5py's ``create_dataset`` (the filters and layout).
DATASET_ARGS = ("compression", "compression_opts", "chunks", "shuffle", "fletcher32", "scaleoffset")

#: Read parameters (``get(..., parameters=...)``, ``read_file(..., parameters=...)``):
#: ``path`` one group or dataset of the file; ``slice``/``fields`` a part of an array;
#: ``attrs`` (dicts: carry attributes, default True); ``mask_and_scale`` (decode CF
#: packing, default True); and the S3 read options.
PARAMETERS = frozenset({"path", "slice", "fields", "attrs", "mask_and_scale", *READ_ARGS})

#: Serializer arguments (``register_dataset_type(..., serializer_args=...)``): the h5py
#: dataset filters and layout, and the S3 read options.
SERIALIZER_ARGS = frozenset({*DATASET_ARGS, *READ_ARGS})


@hookimpl
def butler_formats() -> list[FormatDescriptor]:
    return [
        FormatDescriptor(
            FORMAT,
            (".h5", ".hdf5", ".he5"),
            magic=HDF5_MAGIC,
            description="HDF5 via h5py (arrays, nested dicts, astropy tables, FITS HDU lists)",
            url="https://docs.h5py.org",
            # Files written by other programs are trees of groups: read them as nested dicts.
            python_type="builtins.dict",
            parameters=PARAMETERS,
            serializer_args=SERIALIZER_ARGS,
        )
    ]


@hookimpl
def butler_serializers() -> list[Serializer]:
    return [
        Serializer(python_type, "*", FORMAT, f"{module}:write", f"{module}:read")
        for python_type, module in _TYPES.items()
    ]


@hookimpl
def butler_components() -> list[ComponentReader]:
    # A dict's components (declared by butler-core: its keys, nested) are groups and
    # datasets of the file: read one directly, a dotted path at once.
    return [
        ComponentReader(
            "builtins.dict", "*", FORMAT, "butler_hdf5._components:read_component", nested=True
        )
    ]
