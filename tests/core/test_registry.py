"""The (type, storage, format) registry: lookup order, duplicates, laziness, errors."""

from __future__ import annotations

import collections
import subprocess
import sys
import textwrap
import threading
from collections.abc import Mapping, MutableMapping

import pytest

from butler import DuplicateSerializerError, NoSerializerError, Registry


def w_base(obj, location):  # pragma: no cover - identity matters, not behaviour
    pass


def r_base(location):  # pragma: no cover
    pass


def w_other(obj, location):  # pragma: no cover
    pass


def r_other(location):  # pragma: no cover
    pass


class Base:
    pass


class Child(Base):
    pass


class GrandChild(Child):
    pass


def test_mro_fallback_through_user_subclass() -> None:
    reg = Registry()
    reg.register(Base, "*", "json", w_base, r_base)
    found = reg.find(GrandChild, "json", "posix")
    assert found.write is w_base and found.python_type.endswith("test_registry.Base")


def test_most_derived_class_wins() -> None:
    reg = Registry()
    reg.register(Base, "*", "json", w_base, r_base)
    reg.register(Child, "*", "json", w_other, r_other)
    assert reg.find(GrandChild, "json", "posix").write is w_other
    assert reg.find(Base, "json", "posix").write is w_base


def test_dict_found_through_mapping_abc() -> None:
    reg = Registry()
    reg.register(Mapping, "*", "json", w_base, r_base)
    assert reg.find(dict, "json", "memory").write is w_base
    assert reg.find(collections.OrderedDict, "json", "memory").write is w_base


def test_abc_order_follows_singledispatch() -> None:
    reg = Registry()
    reg.register(Mapping, "*", "json", w_base, r_base)
    reg.register(MutableMapping, "*", "json", w_other, r_other)
    # dict is a MutableMapping, which is more derived than Mapping.
    assert reg.find(dict, "json", "posix").write is w_other


def test_exact_storage_beats_any_storage_at_same_level() -> None:
    reg = Registry()
    reg.register(Base, "*", "fits", w_base, r_base)
    reg.register(Base, "posix", "fits", w_other, r_other)
    assert reg.find(Base, "fits", "posix").write is w_other
    assert reg.find(Base, "fits", "s3").write is w_base


def test_more_derived_any_storage_beats_base_exact_storage() -> None:
    reg = Registry()
    reg.register(Base, "posix", "fits", w_base, r_base)
    reg.register(Child, "*", "fits", w_other, r_other)
    assert reg.find(Child, "fits", "posix").write is w_other


def test_duplicate_raises_and_names_the_key() -> None:
    reg = Registry()
    reg.register(Base, "*", "json", w_base, r_base)
    with pytest.raises(DuplicateSerializerError) as info:
        reg.register(Base, "*", "json", w_other, r_other)
    message = str(info.value)
    assert "json" in message and "Base" in message and "overwrite=True" in message


def test_identical_registration_is_a_no_op() -> None:
    reg = Registry()
    first = reg.register(Base, "*", "json", w_base, r_base)
    again = reg.register(Base, "*", "json", w_base, r_base)
    assert again is first
    # Same strings are identical too (re-importing a module that registers by string).
    reg.register("x.Y", "*", "json", "m:w", "m:r")
    reg.register("x.Y", "*", "json", "m:w", "m:r")


def test_overwrite_replaces_and_clears_cache() -> None:
    reg = Registry()
    reg.register(Base, "*", "json", w_base, r_base)
    assert reg.find(Child, "json", "posix").write is w_base  # now cached
    reg.register(Base, "*", "json", w_other, r_other, overwrite=True)
    assert reg.find(Child, "json", "posix").write is w_other


def test_new_registration_clears_cache() -> None:
    reg = Registry()
    reg.register(Base, "*", "json", w_base, r_base)
    assert reg.find(Child, "json", "posix").write is w_base
    reg.register(Child, "*", "json", w_other, r_other)
    assert reg.find(Child, "json", "posix").write is w_other


def test_miss_names_type_format_storage_and_what_exists() -> None:
    reg = Registry()
    reg.register(Base, "*", "json", w_base, r_base)
    reg.register(Base, "posix", "npy", w_base, r_base)
    with pytest.raises(NoSerializerError) as info:
        reg.find(Child, "fits", "posix")
    message = str(info.value)
    assert "test_registry.Child" in message
    assert "'fits'" in message and "'posix'" in message
    assert "json" in message and "npy" in message  # what is registered
    assert "butler-fits" in message  # what to install


def test_miss_hints_the_storage_distribution() -> None:
    reg = Registry()
    reg.register(Base, "*", "json", w_base, r_base)
    with pytest.raises(NoSerializerError, match="butler-db"):
        reg.find(Base, "sql-table", "database")


def test_miss_for_unrelated_type_says_nothing_is_registered() -> None:
    reg = Registry()
    with pytest.raises(NoSerializerError, match="Nothing is registered"):
        reg.find(int, "json", "posix")


def test_string_type_matches_once_module_is_loaded() -> None:
    reg = Registry()
    reg.register("decimal.Decimal", "*", "json", w_base, r_base)
    import decimal

    assert reg.find(decimal.Decimal, "json", "posix").write is w_base


def test_string_alias_of_a_class_matches() -> None:
    # "collections.OrderedDict" is defined in module "collections" and matches by identity.
    reg = Registry()
    reg.register("collections.OrderedDict", "*", "json", w_base, r_base)
    assert reg.find(collections.OrderedDict, "json", "posix").write is w_base


def test_string_callables_resolved_on_first_use() -> None:
    reg = Registry()
    entry = reg.register(Base, "*", "json", "json:dumps", "json:loads")
    import json

    assert entry.write is json.dumps and entry.read is json.loads


def test_bad_string_callable_is_a_plugin_error() -> None:
    from butler import PluginError

    reg = Registry()
    entry = reg.register(Base, "*", "json", "no_such_module_xyz:write", "json:loads")
    with pytest.raises(PluginError, match="no_such_module_xyz"):
        entry.write  # noqa: B018


def test_registering_strings_imports_nothing(tmp_path) -> None:
    """A string type and string callables stay unimported until an object needs them."""
    pkg = tmp_path / "lazy_pkg_butler"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "types_.py").write_text("class Thing:\n    pass\n")
    (pkg / "io_.py").write_text(
        "def write(obj, location):\n    pass\n\ndef read(location):\n    return 1\n"
    )
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from butler import Registry
        reg = Registry()
        reg.register("lazy_pkg_butler.types_.Thing", "*", "x", "lazy_pkg_butler.io_:write",
                     "lazy_pkg_butler.io_:read")
        try:
            reg.find(int, "x", "posix")
        except Exception:
            pass
        assert "lazy_pkg_butler" not in sys.modules, "registration imported the package"
        from lazy_pkg_butler.types_ import Thing
        entry = reg.find(Thing, "x", "posix")
        assert "lazy_pkg_butler.io_" not in sys.modules, "lookup imported the callables"
        entry.write
        assert "lazy_pkg_butler.io_" in sys.modules
        print("OK")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "OK"


def test_cache_notices_abc_module_loaded_later(tmp_path) -> None:
    """A string-registered ABC whose module loads after a cached lookup takes effect."""
    (tmp_path / "late_abc_butler.py").write_text(
        "from abc import ABC\n"
        "class HasShape(ABC):\n"
        "    @classmethod\n"
        "    def __subclasshook__(cls, sub):\n"
        "        return hasattr(sub, 'shape') or NotImplemented\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:

        class Shaped:
            shape = (1,)

        reg = Registry()
        reg.register(object, "*", "x", w_base, r_base)
        reg.register("late_abc_butler.HasShape", "*", "x", w_other, r_other)
        assert reg.find(Shaped, "x", "posix").write is w_base  # ABC not loadable yet
        import late_abc_butler  # noqa: F401

        assert reg.find(Shaped, "x", "posix").write is w_other
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("late_abc_butler", None)


def test_registry_is_thread_safe() -> None:
    reg = Registry()
    classes = [type(f"T{i}", (Base,), {}) for i in range(200)]
    errors: list[BaseException] = []

    def register(chunk: list[type]) -> None:
        try:
            for cls in chunk:
                reg.register(cls, "*", "json", w_base, r_base)
                assert reg.find(cls, "json", "posix").write is w_base
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(classes[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(reg.serializers) == 200


def test_serializers_view_is_read_only() -> None:
    reg = Registry()
    reg.register(Base, "*", "json", w_base, r_base)
    view = reg.serializers
    with pytest.raises(TypeError):
        view[("a", "b", "c")] = None  # type: ignore[index]


def test_register_validates_arguments() -> None:
    reg = Registry()
    with pytest.raises(TypeError, match="storage"):
        reg.register(Base, "", "json", w_base, r_base)
    with pytest.raises(TypeError, match="write"):
        reg.register(Base, "*", "json", 42, r_base)


def test_identify_format_by_magic_then_extension() -> None:
    from butler import default_registry

    reg = default_registry()
    assert reg.identify_format("x.bin", b"\x93NUMPY\x01\x00") == "npy"
    assert reg.identify_format("data.json", b"{") == "json"
    from butler import FormatError

    with pytest.raises(FormatError, match="cannot identify"):
        reg.identify_format("data.unknown", b"???")
