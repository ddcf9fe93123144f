"""Entry point of butler-fits: declarations only, as strings (no astropy, no numpy).

Every serializer is registered for storage ``"*"``: one reader per type serves every
storage (posix, memory, s3, database). Each opens its file through the Storage contract
(`butler_fits._stored`): by path where the storage has local files, else through the
storage's file object with read hints, so cutouts and column selections fetch only the
bytes they need on S3.
"""

from __future__ import annotations

from butler import ComponentReader, Components, FormatDescriptor, Serializer, hookimpl

FORMAT = "fits"
#: Plain, gzip-compressed and tile-compressed (fpack) FITS names astropy opens.
EXTENSIONS = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fz")

#: Read-time parameters the FITS serializers accept: an HDU (index, EXTNAME or
#: [EXTNAME, EXTVER]), an image ``section`` (numpy.ndarray, CCDData), table ``columns``,
#: and the ``unit`` of a CCDData whose file has no BUNIT (as ``CCDData.read(unit=...)``).
PARAMETERS = frozenset({"hdu", "section", "columns", "unit"})
#: Serializer arguments: CHECKSUM/DATASUM keywords, tile compression of images, and the
#: S3 read cache (``per_storage: {s3: {block_size: ..., cache_blocks: ...}}``).
SERIALIZER_ARGS = frozenset({"checksum", "compress", "compress_args", "block_size", "cache_blocks"})

#: python type -> serializer module inside this package.
_TYPES = {
    "numpy.ndarray": "_image",
    "astropy.table.Table": "_table",
    "astropy.io.fits.HDUList": "_hdulist",
    "astropy.io.fits.Header": "_header",
    "astropy.nddata.CCDData": "_ccddata",
    "butler_fits._abc.FitsReadWritable": "_common_api",
}


@hookimpl
def butler_formats() -> list[FormatDescriptor]:
    return [
        FormatDescriptor(
            FORMAT,
            EXTENSIONS,
            magic=b"SIMPLE  =",
            # A gzip stream is FITS when what it inflates to starts like FITS.
            identify="butler_fits._checks:identify",
            description="FITS images, tables, HDU lists, headers and CCDData (astropy)",
            url="https://docs.astropy.org/en/stable/io/fits/",
            # A FITS file of unknown provenance is read as its primary image.
            python_type="numpy.ndarray",
            parameters=PARAMETERS,
            serializer_args=SERIALIZER_ARGS,
            # Each reader checks the HDUs itself: a CCDData file reads as its image array.
            reads_other_types=True,
            # What holds a whole FITS file, and what narrower types leave out of one.
            whole_type="astropy.io.fits.HDUList",
            dropped="butler_fits._dropped:dropped",
        )
    ]


#: Parts of a disassembled CCDData: python type -> (format, "module:write", "module:read").
_PART_TYPES = {
    "astropy.wcs.WCS": (FORMAT, "_parts:write_wcs", "_parts:read_wcs"),
    "astropy.nddata.NDUncertainty": (FORMAT, "_parts:write_uncertainty", "_parts:read_uncertainty"),
    "astropy.units.UnitBase": ("json", "_unit:write", "_unit:read"),
    # One HDU of a disassembled HDUList (every HDU class derives from this base).
    "astropy.io.fits.hdu.base._BaseHDU": (FORMAT, "_hdu:write", "_hdu:read"),
}


@hookimpl
def butler_serializers() -> list[Serializer]:
    specs = [
        Serializer(
            python_type, "*", FORMAT, f"butler_fits.{module}:write", f"butler_fits.{module}:read"
        )
        for python_type, module in _TYPES.items()
    ]
    specs += [
        Serializer(python_type, "*", fmt, f"butler_fits.{write}", f"butler_fits.{read}")
        for python_type, (fmt, write, read) in _PART_TYPES.items()
    ]
    return specs


_PARTS = "butler_fits._components"
#: CCDData components (astropy types named as strings: nothing imported at discovery).
CCDDATA_COMPONENTS = {
    "data": "numpy.ndarray",
    "mask": "numpy.ndarray",
    "uncertainty": "astropy.nddata.NDUncertainty",
    "wcs": "astropy.wcs.WCS",
    "meta": "collections.abc.Mapping",
    "header": "collections.abc.Mapping",
    "unit": "astropy.units.UnitBase",
}


@hookimpl
def butler_components() -> list[Components | ComponentReader]:
    return [
        Components(
            "astropy.nddata.CCDData",
            CCDDATA_COMPONENTS,
            f"{_PARTS}:split_ccddata",
            f"{_PARTS}:assemble_ccddata",
            extract=f"{_PARTS}:extract_ccddata",
        ),
        # Every HDU, by EXTNAME or index (not known before the file is read).
        Components(
            "astropy.io.fits.HDUList",
            {},
            f"{_PARTS}:split_hdulist",
            f"{_PARTS}:assemble_hdulist",
            dynamic=True,
            extract=f"{_PARTS}:extract_hdu",
        ),
        ComponentReader("astropy.nddata.CCDData", "*", FORMAT, f"{_PARTS}:read_ccddata_component"),
        ComponentReader("astropy.io.fits.HDUList", "*", FORMAT, f"{_PARTS}:read_hdu"),
    ]
