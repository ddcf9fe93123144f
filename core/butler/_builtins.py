"""butler-core's own storages, formats and serializers, declared through the plugin hooks."""

from __future__ import annotations

from ._declarations import FormatDescriptor, Serializer, StorageSpec
from .hookspecs import hookimpl

_JSON_TYPES = (
    "builtins.dict",
    "builtins.list",
    "builtins.str",
    "builtins.int",
    "builtins.float",
    "builtins.bool",
    "types.NoneType",
    "butler._abc.DataclassLike",
)
_CONFIG_TYPES = ("butler._config.Config", "butler._abc.DataclassLike", "builtins.dict")


@hookimpl
def butler_storages() -> list[StorageSpec]:
    return [
        StorageSpec(
            "posix",
            ("file",),
            "butler.storages.posix:PosixStorage",
            "Local disk: atomic rename + fsync, metadata in extended attributes",
        ),
        StorageSpec(
            "memory",
            ("memory",),
            "butler.storages.memory:MemoryStorage",
            "In-process memory shared by every Butler in the process",
        ),
    ]


@hookimpl
def butler_formats() -> list[FormatDescriptor]:
    return [
        FormatDescriptor(
            "config",
            (".yaml", ".yml"),
            description="YAML config recording its subclass",
            python_type="builtins.dict",
            parameters=frozenset(),
            serializer_args=frozenset(),
        ),
        FormatDescriptor(
            "json",
            (".json",),
            description="JSON (dicts, lists, dataclasses)",
            python_type="builtins.dict",
            parameters=frozenset(),
            serializer_args=frozenset({"indent"}),
        ),
        FormatDescriptor(
            "npy",
            (".npy",),
            magic=b"\x93NUMPY",
            description="NumPy array, never pickled",
            python_type="numpy.ndarray",
            parameters=frozenset({"slice"}),
            serializer_args=frozenset(),
        ),
        FormatDescriptor(
            "pickle",
            (".pickle", ".pkl"),
            description="Python pickle; reading requires allow_pickle=True",
            parameters=frozenset(),
            serializer_args=frozenset({"protocol"}),
        ),
    ]


def _pair(module: str) -> tuple[str, str]:
    return f"butler.formats.{module}:write", f"butler.formats.{module}:read"


@hookimpl
def butler_serializers() -> list[Serializer]:
    specs = [Serializer(t, "*", "json", *_pair("json_")) for t in _JSON_TYPES]
    specs += [Serializer(t, "*", "config", *_pair("config")) for t in _CONFIG_TYPES]
    specs.append(Serializer("builtins.object", "*", "pickle", *_pair("pickle_")))
    specs.append(Serializer("numpy.ndarray", "*", "npy", *_pair("npy")))
    return specs
