"""What plugins declare: serializers, storages and format descriptors.

Each declaration may name its callables and classes as ``"module:attribute"`` strings, so a
plugin's entry-point module costs nothing until a dataset of its kind is actually touched.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ._errors import ParameterError, PluginError
from ._types import type_name

__all__ = ["Dropped", "FormatDescriptor", "Serializer", "StorageSpec", "resolve_reference"]


def parameters_dict(given: Any, what: str) -> dict[str, Any]:
    """A copy of the ``parameters`` a call was given (``None``: none), refused unless they
    are a mapping: ``parameters=[1]`` or ``"section"`` raised a bare TypeError or
    ValueError from ``dict()``.

    Raises
    ------
    ParameterError
        Naming the call and what it was given.
    """
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise ParameterError(
            f"parameters of {what} must be a mapping of names to values "
            f"({{'section': ...}}), not a value of type {type(given).__name__!r}"
        )
    return dict(given)


def resolve_reference(ref: Any) -> Any:
    """Return ``ref`` itself, or the object named by a ``"module:attribute"`` string.

    Raises
    ------
    PluginError
        If the string is malformed or the module/attribute cannot be imported.
    """
    if not isinstance(ref, str):
        return ref
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise PluginError(f"reference {ref!r} is not of the form 'module:attribute'")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"cannot load {ref!r}: {exc}") from exc
    return obj


class _LazyRef:
    """A callable reference resolved (thread-safely) on first use and then kept."""

    __slots__ = ("_lock", "_obj", "ref")

    def __init__(self, ref: Any) -> None:
        self.ref = ref
        self._obj = None if isinstance(ref, str) else ref
        self._lock = threading.Lock()

    def get(self) -> Any:
        if self._obj is None:
            with self._lock:
                if self._obj is None:
                    self._obj = resolve_reference(self.ref)
        return self._obj

    def describe(self) -> str:
        if isinstance(self.ref, str):
            return self.ref
        return (
            f"{getattr(self.ref, '__module__', '?')}:{getattr(self.ref, '__qualname__', self.ref)}"
        )


@dataclass(frozen=True, eq=False)
class Serializer:
    """A (write, read) pair registered for one (python type, storage, format) key.

    ``write(obj, location, **serializer_args)`` and ``read(location, **serializer_args)``
    may be callables or ``"module:function"`` strings resolved on first use. A plugin's
    hook returns these; `Registry.register` builds one and hands it to `Registry.add`.

    ``decode`` (optional, a callable or ``"module:function"`` string) is the small-get
    shortcut of a format that parses whole bytes: ``decode(data, cls)`` returns what
    ``read`` would return for a dataset holding ``data`` whose class resolved to ``cls``.
    Butler calls it only where ``read`` would need nothing else: a read with no
    parameters, component, serializer arguments or progress callback, of a dataset whose
    bytes and metadata the storage handed over in one step (`Storage.read_small`). It
    must not depend on anything but its arguments, and may raise anything: butler then
    calls ``read``, which reports the problem in its own words.

    Raises
    ------
    TypeError
        If ``python_type`` is neither a class nor a dotted string, ``storage`` or
        ``format`` is not a non-empty string, or ``write``/``read`` is neither callable
        nor a string.
    """

    python_type: str  # a class is accepted and stored by its dotted name
    storage: str
    format: str
    write_ref: Any
    read_ref: Any
    priority: int = 0
    distribution: str = "user"
    decode_ref: Any = None
    _write: _LazyRef = field(init=False, repr=False)
    _read: _LazyRef = field(init=False, repr=False)
    _decode: _LazyRef | None = field(init=False, repr=False)
    # The class itself when one was given: local and dynamically created classes cannot
    # be found again by their dotted name.
    _class: type | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        given: Any = self.python_type
        if not isinstance(given, type | str) or not given:
            raise TypeError(f"python_type must be a class or a dotted string, not {given!r}")
        for what, value in (("storage", self.storage), ("format", self.format)):
            if not isinstance(value, str) or not value:
                raise TypeError(f"{what} must be a non-empty string, not {value!r}")
        for what, value in (("write", self.write_ref), ("read", self.read_ref)):
            if not (callable(value) or isinstance(value, str)):
                raise TypeError(
                    f"{what} must be a callable or a 'module:function' string, not {value!r}"
                )
        decode = self.decode_ref
        if not (decode is None or callable(decode) or isinstance(decode, str)):
            raise TypeError(
                f"decode must be None, a callable or a 'module:function' string, not {decode!r}"
            )
        object.__setattr__(self, "python_type", type_name(given))
        object.__setattr__(self, "_class", given if isinstance(given, type) else None)
        object.__setattr__(self, "_write", _LazyRef(self.write_ref))
        object.__setattr__(self, "_read", _LazyRef(self.read_ref))
        object.__setattr__(self, "_decode", None if decode is None else _LazyRef(decode))

    @property
    def key(self) -> tuple[str, str, str]:
        """The registry key ``(python_type, storage, format)``."""
        return (self.python_type, self.storage, self.format)

    @property
    def write(self) -> Callable[..., None]:
        """The write callable, imported on first access."""
        return self._write.get()  # type: ignore[no-any-return,unused-ignore]

    @property
    def read(self) -> Callable[..., Any]:
        """The read callable, imported on first access."""
        return self._read.get()  # type: ignore[no-any-return,unused-ignore]

    @property
    def decode(self) -> Callable[[bytes, type], Any] | None:
        """The small-get shortcut (see the class text), imported on first access; ``None``
        when the serializer declares none."""
        return None if self._decode is None else self._decode.get()

    def owned_by(self, distribution: str) -> Serializer:
        """A copy recorded as declared by ``distribution`` (discovery sets the owner)."""
        # The class, when one was given, so the copy still finds local classes.
        given: Any = self._class or self.python_type
        return replace(self, python_type=given, distribution=distribution)

    def same_callables(self, other: Serializer) -> bool:
        """True when ``other`` names the very same write and read functions (and, when
        both declare one, the same ``decode``: a missing one is only a missing shortcut,
        so registering json's own write and read again stays harmless)."""
        return (
            self._write.describe() == other._write.describe()
            and self._read.describe() == other._read.describe()
            and (
                self._decode is None
                or other._decode is None
                or self._decode.describe() == other._decode.describe()
            )
        )

    def __repr__(self) -> str:
        return (
            f"Serializer(type={self.python_type!r}, storage={self.storage!r}, "
            f"format={self.format!r}, write={self._write.describe()!r}, "
            f"read={self._read.describe()!r}, distribution={self.distribution!r})"
        )


@dataclass(frozen=True)
class StorageSpec:
    """A storage type: its name, the URI schemes it serves and its `Storage` class.

    ``cls`` may be a class or a ``"module:Class"`` string (imported on first use).
    """

    type_name: str
    schemes: tuple[str, ...]
    cls: Any
    description: str = ""
    distribution: str = "user"

    def load(self) -> Any:
        """Import and return the `Storage` subclass."""
        return resolve_reference(self.cls)


@dataclass(frozen=True)
class Dropped:
    """What reading a file as one python type leaves out of it.

    Attributes
    ----------
    kept
        The part that is read, e.g. ``"HDU 0:PRIMARY"``.
    parts
        Other parts holding data, e.g. ``"1:CAT (table, 3 rows)"``.
    cards
        Keywords of the header cards left out (one per keyword, in file order).
    ncards
        How many header cards are left out.
    """

    kept: str
    parts: tuple[str, ...] = ()
    cards: tuple[str, ...] = ()
    ncards: int = 0

    def __bool__(self) -> bool:
        return bool(self.parts or self.ncards)

    def describe(self) -> str:
        """``"header cards (OBJECT, EXPTIME: 2) and HDUs 1:CAT (table, 3 rows)"``."""
        what = []
        if self.ncards:
            shown = ", ".join(self.cards[:8]) + (", ..." if len(self.cards) > 8 else "")
            what.append(f"{self.ncards} header card(s) ({shown})")
        if self.parts:
            what.append(f"HDU(s) {', '.join(self.parts)}")
        return " and ".join(what)


@dataclass(frozen=True)
class FormatDescriptor:
    """A format: its name, file extensions and how to recognise its bytes.

    Parameters
    ----------
    name
        Format name used in dataset type definitions (``"fits"``).
    extensions
        File extensions, the first one being the default (``(".fits", ".fit")``).
    magic
        Bytes a file of this format starts with, if it has a signature.
    identify
        Optional ``identify(first_bytes) -> bool`` callable or ``"module:function"`` string,
        for formats a fixed prefix cannot recognise.
    python_type
        Dotted name of the type a file of this format is read as when nothing else says
        (``butler convert``, `butler.read_file`): ``"numpy.ndarray"`` for images.
    parameters
        Names of the ``parameters`` that ``get``/``put`` accept for this format
        (``{"section", "columns"}``). Anything else is refused with a `ParameterError`
        before a byte moves. ``None`` (the default, for formats written before this was
        declared) accepts anything.
    serializer_args
        Names of the serializer keyword arguments a dataset type may set
        (``{"checksum", "compress"}``); checked by ``register_dataset_type``. ``None``
        accepts anything.
    reads_other_types
        True when the format's serializers can read a dataset written as another class
        (a FITS file written as ``CCDData`` read through a ``numpy.ndarray`` dataset type
        gives its image): a recorded class that is not a subclass of the dataset type's
        then does not stop the read, and the serializer of the dataset type's own class
        reads it (checking the bytes itself).
    whole_type
        Dotted name of the python type that holds *everything* a file of this format can
        hold, where ``python_type`` (the default) holds less (FITS: ``HDUList`` beside the
        image array). Tools that move whole files (``butler convert``/``put``) read files
        as this type whenever the destination can write it.
    dropped
        ``dropped(location, python_type) -> Dropped | None`` (a callable or
        ``"module:function"``): what reading the file at ``location`` as ``python_type``
        would leave out, so tools can warn or refuse instead of dropping in silence.
    merging_parameters
        Put parameters that make the format merge into an existing dataset (``{"mode"}``
        for ``sql-table``'s append/upsert): given one of them, ``Butler.put`` leaves the
        existence check to the format instead of refusing an existing dataset.
    """

    name: str
    extensions: tuple[str, ...] = ()
    magic: bytes | None = None
    identify: Any = None
    description: str = ""
    url: str = ""
    distribution: str = "user"
    python_type: str = "builtins.object"
    parameters: frozenset[str] | None = None
    serializer_args: frozenset[str] | None = None
    merging_parameters: frozenset[str] = frozenset()
    reads_other_types: bool = False
    whole_type: str | None = None
    dropped: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "merging_parameters", frozenset(self.merging_parameters))
        for name in ("parameters", "serializer_args"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, frozenset(value))

    def dropped_by(self, location: Any, python_type: str) -> Dropped | None:
        """What reading ``location`` as ``python_type`` leaves out (``None``: nothing known)."""
        if self.dropped is None or python_type == self.whole_type:
            return None
        found = resolve_reference(self.dropped)(location, python_type)
        return found if isinstance(found, Dropped) else None

    def merges(self, parameters: Mapping[str, Any]) -> bool:
        """True when a put with these parameters merges into an existing dataset."""
        return not self.merging_parameters.isdisjoint(parameters)

    def check_parameters(self, given: Mapping[str, Any], *, what: str) -> None:
        """Refuse parameters this format does not declare (``{"sectoin": ...}``).

        Raises
        ------
        ParameterError
            Naming the unknown and the accepted parameters.
        """
        _check_names(given, self.parameters, f"parameter(s) for {what} in format {self.name!r}")

    def check_serializer_args(self, given: Mapping[str, Any], *, what: str) -> None:
        """Refuse serializer arguments this format does not declare (``checksun=True``);
        ``per_storage`` holds a mapping of such arguments per storage type."""
        flat = {k: v for k, v in given.items() if k != "per_storage"}
        per_storage = given.get("per_storage", {})
        if not isinstance(per_storage, Mapping) or not all(
            isinstance(v, Mapping) for v in per_storage.values()
        ):
            raise ParameterError(
                f"serializer_args['per_storage'] of {what} must map storage types to "
                f"mappings of arguments, not {per_storage!r}"
            )
        for args in [flat, *per_storage.values()]:
            _check_names(
                args, self.serializer_args, f"serializer argument(s) of {what} for {self.name!r}"
            )

    @property
    def extension(self) -> str:
        """The default file extension (empty when the format declares none)."""
        return self.extensions[0] if self.extensions else ""

    def matches_bytes(self, first_bytes: bytes) -> bool:
        """True when ``first_bytes`` look like this format (magic prefix or ``identify``)."""
        if self.magic is not None and first_bytes.startswith(self.magic):
            return True
        if self.identify is not None:
            return bool(resolve_reference(self.identify)(first_bytes))
        return False

    def __repr__(self) -> str:
        # What a user needs to choose a format: its name, files, what it is, where to read on.
        text = f"<FormatDescriptor {self.name!r} ({' '.join(self.extensions) or 'no extension'})"
        text += f" from {self.distribution!r}"
        if self.description:
            text += f": {self.description}"
        if self.url:
            text += f"\n  Learn more at {self.url}"
        return text + ">"


def _check_names(given: Mapping[str, Any], accepted: frozenset[str] | None, what: str) -> None:
    if accepted is None:
        return
    unknown = sorted(str(k) for k in given if k not in accepted)
    if unknown:
        hint = ", ".join(sorted(accepted)) if accepted else "none"
        raise ParameterError(f"unknown {what}: {unknown}; accepted: {hint}")
