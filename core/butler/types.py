"""Naming Python types by dotted strings: the public surface for serializer plugins.

* `type_name` — the dotted name butler records for a class;
* `loaded_type` — the class of a name whose module is already imported (never imports);
* `import_type` — import a class by name (only for names the *caller* chose);
* `resolve_subclass` — the recorded concrete class of a dataset, checked against the
  dataset type's class.

.. versionadded:: 0.2
"""

from __future__ import annotations

from ._types import import_type, loaded_type, resolve_subclass, type_name

__all__ = ["import_type", "loaded_type", "resolve_subclass", "type_name"]
