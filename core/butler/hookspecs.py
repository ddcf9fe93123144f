"""Hook specifications of the ``butler`` plugin system (pluggy). Public contract.

A plugin is a module named by an entry point in the ``butler`` group::

    [project.entry-points.butler]
    fits = "butler_fits._plugin"

and implements any of these hooks with ``@butler.hookimpl``. Hooks return *declarations*
whose callables and classes may be ``"module:attribute"`` strings, so that discovering a
plugin imports nothing heavy::

    from butler import Serializer, hookimpl

    @hookimpl
    def butler_serializers():
        return [Serializer("builtins.dict", "*", "csv",
                           "butler_csv._csv:write", "butler_csv._csv:read")]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from ._components import ComponentReader, Components
    from ._declarations import FormatDescriptor, Serializer, StorageSpec

__all__ = ["hookimpl", "hookspec"]

#: Project name shared by the markers and the entry-point group.
PROJECT = "butler"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def butler_serializers() -> list[Serializer]:  # type: ignore[empty-body]
    """Return serializer declarations (`butler.Serializer`) this plugin provides.

    Each names a python type (class or dotted string), a storage type (or ``"*"``), a
    format and ``write``/``read`` callables or ``"module:function"`` strings. Set
    ``priority`` to win conflicts with another plugin registering the same key.
    """


@hookspec
def butler_storages() -> list[StorageSpec]:  # type: ignore[empty-body]
    """Return storage declarations (`butler.StorageSpec`): type name, URI schemes, class."""


@hookspec
def butler_formats() -> list[FormatDescriptor]:  # type: ignore[empty-body]
    """Return format descriptors (`butler.FormatDescriptor`): name, extensions, identify."""


@hookspec
def butler_components() -> list[Components | ComponentReader]:  # type: ignore[empty-body]
    """Return component declarations: `butler.Components` (a python type's named components,
    with ``split``/``assemble``) and `butler.ComponentReader` (a format's direct read of
    components, so ``get("calexp.wcs")`` reads only the bytes it needs).

    Like serializers, types are classes or dotted strings, callables may be
    ``"module:function"`` strings: nothing is imported until a component is used.
    """
