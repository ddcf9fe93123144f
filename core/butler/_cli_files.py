"""Files on the command line: paths and URIs given as FILE/SRC/DST, and reading a file as
the richest type the destination can take (`read_standalone`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import click

from ._errors import ButlerError, DatasetExistsError

__all__ = [
    "check_output",
    "file_size",
    "formats_writing",
    "hdu_option",
    "input_file",
    "local_path",
    "naming",
    "read_standalone",
    "same_file",
    "warn",
]


@contextlib.contextmanager
def naming(flag: str) -> Iterator[None]:
    """Prefix the message of a butler error raised inside with the flag that caused it."""
    try:
        yield
    except ButlerError as exc:
        raise type(exc)(f"{flag}: {exc}") from exc


def local_path(uri: str) -> str | None:
    """The local path ``uri`` names (``file://`` included), or None for remote URIs."""
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    elif "://" in uri:
        return None
    return os.path.abspath(os.path.expanduser(uri))


def same_file(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` name the same file: ``./x`` and ``x``, a symlink and its
    target, a hard link, or the same remote URI up to redundant ``/`` and ``.``."""
    import posixpath

    la, lb = local_path(a), local_path(b)
    if la is not None and lb is not None:
        try:
            return os.path.samefile(la, lb)
        except OSError:  # one does not exist (yet): compare where they resolve to
            return os.path.realpath(la) == os.path.realpath(lb)
    if la is not None or lb is not None:
        return False

    def norm(uri: str) -> str:
        scheme, _, rest = uri.partition("://")
        return f"{scheme.lower()}://{posixpath.normpath(rest)}"

    return norm(a) == norm(b)


def input_file(path: str, what: str) -> str:
    """Refuse a local input that is missing or a directory, naming the argument."""
    from ._errors import DatasetNotFoundError, StorageError

    local = local_path(path)
    if local is not None:
        if os.path.isdir(local):
            raise StorageError(f"{what} {path!r} is a directory, not a file")
        if not os.path.exists(local):
            raise DatasetNotFoundError(f"{what} {path!r} does not exist")
    return path


def check_output(path: str, what: str, overwrite: bool, *, source: str) -> None:
    """Refuse to write ``path`` onto ``source`` (even with --overwrite), onto a directory,
    or onto an existing file without --overwrite; checked before anything is read."""
    from ._errors import StorageError

    if same_file(path, source):
        raise DatasetExistsError(
            f"{what} {path!r} is the file being read ({source!r}): writing it in place would "
            f"replace it with what butler understood of it (FITS header cards, HDUs and "
            f"attributes it does not read are lost), even with --overwrite; choose another name"
        )
    local = local_path(path)
    if local is not None and os.path.isdir(local):
        raise StorageError(f"{what} {path!r} is a directory, not a file")
    if not overwrite and local is not None and os.path.lexists(local):
        raise DatasetExistsError(f"{what} {path!r} already exists; pass --overwrite to replace it")


def file_size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def warn(message: str) -> None:
    click.echo(f"butler: warning: {message}", err=True)


def formats_writing(registry: Any, python_type: str) -> list[str]:
    """Formats an installed serializer writes ``python_type`` to (registered by that name)."""
    return sorted({s.format for s in registry.serializers.values() if s.python_type == python_type})


def hdu_option(value: str | None) -> int | str | None:
    """``--hdu 2`` is an index, ``--hdu SCI`` an EXTNAME."""
    if value is None:
        return None
    text = value.strip()
    # ASCII digits only: str.isdigit() takes '²' (int() then fails) and other scripts' digits.
    return int(text) if text.isascii() and text.isdigit() else value


def read_standalone(
    uri: str, file_format: str | None, python_type: str | None, registry: Any = None, *,
    hdu: int | str | None = None, dst_format: str | None = None,
    keep_all: str = "", **storage_options: Any,
) -> Any:  # fmt: skip
    """Read a file as the richest type that the destination can take.

    Without ``--type``: the type butler recorded when it wrote the file (if an installed
    serializer vouches for it), else the format's whole-file type (`FormatDescriptor.whole_type`:
    an ``HDUList`` for FITS) when ``dst_format`` can write it, else the format's default
    type -- refused when that would drop whole HDUs holding data, with a warning on stderr
    when it drops header cards. With ``--type`` (or a dataset type) narrower than the whole
    file, what is dropped is warned about; ``--hdu`` picks one HDU, knowingly.

    ``keep_all`` is the advice a warning ends with, how to keep what is dropped (``{whole}``
    is replaced by the whole-file type).
    """
    from ._errors import DatasetTypeError, NoSerializerError, ParameterError
    from ._files import file_location, vouched_type
    from ._plugins import default_registry
    from ._types import type_name

    reg = registry or default_registry()
    parameters = {} if hdu is None else {"hdu": hdu}
    location = file_location(
        uri, format=file_format, python_type=python_type, registry=reg, parameters=parameters,
        **storage_options,
    )  # fmt: skip
    descriptor = reg.format(location.format)
    whole = descriptor.whole_type
    if hdu is not None:
        with naming(f"--hdu {hdu}"):
            reg.format(location.format).check_parameters(parameters, what=repr(uri))
            if python_type is not None and type_name(python_type) == whole:
                raise ParameterError(f"{whole} reads every HDU of {uri!r}; drop --hdu")
    known = sorted(s.python_type for s in reg.serializers.values() if s.format == location.format)
    recorded = python_type is None and vouched_type(
        location.stored_metadata().get("python_type"), location.format, reg
    )
    if whole and whole in known and not recorded and hdu is None:
        writers = formats_writing(reg, whole)
        if python_type is None and dst_format in writers:
            location = replace(location, python_type=whole)  # the destination keeps every HDU
        dropped = (
            None
            if location.python_type == whole
            else descriptor.dropped_by(location, location.python_type)
        )
        if dropped:
            chosen = location.python_type
            where = f"formats that keep them: {', '.join(writers)}" if writers else ""
            if python_type is None and dropped.parts:
                raise NoSerializerError(
                    f"{uri!r} holds more than one HDU with data: reading it as {chosen} (what "
                    f"{dst_format or 'the destination'} can hold) would keep only {dropped.kept} "
                    f"and drop {dropped.describe()}, and no installed serializer writes {whole} "
                    f"as {dst_format or 'that format'}; pick one HDU with --hdu N (its image as "
                    f"numpy.ndarray; a table HDU with --hdu N --type astropy.table.Table), or "
                    f"convert to a format that keeps every HDU: {', '.join(writers) or 'none'}"
                )
            warn(
                f"{uri!r} read as {chosen} keeps only {dropped.kept}: dropping "
                f"{dropped.describe()}; {keep_all.format(whole=whole) or where}"
                + ("" if python_type is not None else "; --hdu N picks another HDU")
            )
    try:
        with naming(f"--hdu {hdu}") if hdu is not None else contextlib.nullcontext():
            return location.read()  # "--hdu 7: file 'x.fits': has no HDU 7; its HDUs are ..."
    except (NoSerializerError, DatasetTypeError) as exc:
        if python_type is None:
            raise NoSerializerError(
                f"cannot tell what type to read {uri!r} ({location.format}) as; pass "
                f"--type with one of: {', '.join(known) or 'none registered'}"
            ) from None
        if python_type in known:
            raise
        # --type names a type no installed plugin reads this format as: butler would have to
        # import it, which it never does for a name typed on the command line or recorded in
        # a file.
        raise type(exc)(
            f"--type {python_type}: cannot read {uri!r} ({location.format}) as "
            f"{python_type!r}; types installed plugins read {location.format} files as: "
            f"{', '.join(known) or 'none'}"
        ) from exc
