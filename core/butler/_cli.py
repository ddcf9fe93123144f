"""The ``butler`` command line.

Every command prints one clear line on error (``butler: error: ...``) and exits non-zero;
``--debug`` shows the traceback. ``--json`` gives machine-readable output.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from ._cli_files import (
    check_output,
    file_size,
    hdu_option,
    input_file,
    local_path,
    naming,
    read_standalone,
    warn,
)
from ._errors import ButlerError

#: Transfers smaller than this get no progress bar.
PROGRESS_THRESHOLD = 4 * 1024 * 1024


def _split_pairs(pairs: tuple[str, ...], what: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=what)
        if key.strip() in result:
            raise click.BadParameter(f"{key.strip()!r} is given twice", param_hint=what)
        result[key.strip()] = value
    return result


#: Keyword arguments of `Butler`, `Butler.create` and `write_file` that are no storage
#: options: ``-O`` never reaches them (``-O run=A`` would bypass ``--run``, ``-O
#: allow_pickle=true`` turn on unpickling), and says which flag does instead.
_NOT_STORAGE_OPTIONS = {
    "run": "use --run RUN",
    "collections": "use --collections A,B",
    "checksum": "use 'butler init --checksum'",
    "allow_pickle": "use --allow-pickle (butler get, convert)",
    "index": "use 'butler reindex --index URL' (and $BUTLER_TRUSTED_INDEXES to trust one)",
    "max_read_bytes": "set $BUTLER_MAX_READ_BYTES",
    "format": "use --format, --from or --to",
    "python_type": "use --type",
    "overwrite": "use --overwrite",
    "hdu": "use --hdu",
    "registry": "",
    "mapper": "",
    "allow_imports": "",
    "parameters": "",
    "progress": "",
    "writing": "",
    "dst_format": "",
    "keep_all": "",
}


def _parse_pairs(pairs: tuple[str, ...], what: str) -> dict[str, Any]:
    """Storage options: ints, bools and null are typed (``anon=true``, ``max_retries=3``)."""
    parsed = {key: _scalar(value) for key, value in _split_pairs(pairs, what).items()}
    for key in parsed:
        if what == "--option" and key in _NOT_STORAGE_OPTIONS:
            advice = _NOT_STORAGE_OPTIONS[key]
            raise click.BadParameter(
                f"{key!r} is not a storage option" + (f"; {advice}" if advice else ""),
                param_hint="-O/--option",
            )
    return parsed


def _scalar(value: str) -> Any:
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    if re.fullmatch(r"[+-]?[0-9]+", value.strip()):  # not int()'s other digits ('\u0661')
        return int(value)
    return value


def _data_id(
    b: Any, dataset_type: str, ids: tuple[str, ...], *, partial: bool = False
) -> dict[str, Any]:
    """``--id`` values typed by the dataset type's declared dimensions, never by guessing.

    ``--id band=true`` is the string ``'true'`` for a ``str`` dimension; ``--id visit=007``
    is ``7`` for an ``int`` one. Unknown keys and values the dimension cannot take are
    reported against ``--id`` (an `InvalidDataIdError`, one line, exit code 1).
    """
    from ._errors import InvalidDataIdError
    from ._mapper import coerce_value

    raw = _split_pairs(ids, "--id")
    dt = b.dataset_type(dataset_type)
    dims = dict(dt.dimensions)
    result: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in dims:
            raise InvalidDataIdError(
                f"--id {key}={value}: dataset type {dataset_type!r} has no dimension {key!r}; "
                f"its dimensions are {', '.join(f'{d} ({k})' for d, k in dims.items()) or 'none'}"
            )
        try:
            result[key] = coerce_value(dt, key, value)
        except InvalidDataIdError as exc:
            raise InvalidDataIdError(
                f"--id {key}={value}: dimension {key!r} of dataset type {dataset_type!r} is "
                f"{dims[key]}: {exc}"
            ) from None
    missing = [d for d in dims if d not in result]
    if missing and not partial:
        needed = ", ".join(f"--id {d}=..." for d in missing)
        raise InvalidDataIdError(
            f"--id: dataset type {dataset_type!r} also needs {needed}; its dimensions are "
            f"{', '.join(f'{d} ({k})' for d, k in dims.items())}"
        )
    return result


#: Python spellings in butler's messages and what a command-line user types instead.
_CLI_REMEDIES = (
    ("overwrite=True", "--overwrite"),
    ("register_dataset_type()", "'butler define'"),
    ("only get, get_many and exists read components", "only 'butler get' reads components"),
    ("(index='postgresql+psycopg://...')", "(--index postgresql+psycopg://...)"),
    ("must be None, True or False", "must be true, false or null"),
    (
        "pass allow_pickle=True to get() or Butler() if you trust",
        "pass --allow-pickle if you trust",
    ),
    (", or in Python pass it as Butler(root, index=URL)", ""),  # the variable is the CLI's way
    (
        "raise it with Butler(..., max_read_bytes=N), read_file(..., max_read_bytes=N) or $",
        "raise it with $",
    ),
)

#: The same, for spellings holding a value: (pattern, replacement).
_CLI_REMEDY_PATTERNS = (
    (
        re.compile(r"import '[^']+' yourself, or pass allow_imports=\['([^']+)'\] to Butler"),
        r"pass --allow-import \1 (butler get)",
    ),
    (
        re.compile(r"create one with Butler\.create\(.*?\) or 'butler init'"),
        "create one with 'butler init'",
    ),
)


def _emit(ctx: click.Context, data: Any, text: str) -> None:
    if ctx.find_root().params.get("json_output"):
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(text)


@contextlib.contextmanager
def _progress(label: str, total: int | None) -> Iterator[Any]:
    """A rich progress bar on a terminal for big transfers; otherwise nothing."""
    if not sys.stderr.isatty() or (total is not None and total < PROGRESS_THRESHOLD):
        yield None
        return
    try:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TransferSpeedColumn,
        )
    except ImportError:
        yield None
        return
    from rich.console import Console

    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn())
    # On stderr: stdout carries the command's output (possibly --json).
    with Progress(*columns, transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total)

        def update(done: int, size: int | None) -> None:
            bar.update(task, completed=done, total=size or total)

        yield update


class _Group(click.Group):
    """Turns butler errors into one line and an exit code of 1 (traceback with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise  # usage errors (exit 2), ctx.exit(), Ctrl-C: click reports them
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            message = " | ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            for python, flag in _CLI_REMEDIES:
                message = message.replace(python, flag)
            for pattern, remedy in _CLI_REMEDY_PATTERNS:
                message = pattern.sub(remedy, message)
            hint = "" if isinstance(exc, ButlerError) else " (--debug shows the traceback)"
            click.echo(f"butler: error: {type(exc).__name__}: {message}{hint}", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option("--json", "json_output", is_flag=True, help="Machine-readable JSON output.")
def main(debug: bool, json_output: bool) -> None:
    """Store and load Python objects by (type, format, storage).

    \b
    Examples:
      butler init ./repo
      butler define ./repo calexp --type numpy.ndarray --format fits -d visit=int -d ccd=int
      butler put ./repo calexp image.fits --id visit=1 --id ccd=2
      butler get ./repo calexp --id visit=1 --id ccd=2 -o out.fits
      butler ls ./repo calexp
      butler convert s3://bucket/img.fits ./img.h5
    """


_option = click.option(
    "--option",
    "-O",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Storage option (endpoint_url=..., anon=true); never stored in the repository.",
)
_ids = click.option(
    "--id", "ids", multiple=True, metavar="KEY=VALUE", help="Data ID entry (repeatable)."
)
_hdu_option = click.option(
    "--hdu", metavar="N|EXTNAME", help="Read only this HDU of a FITS file (index or EXTNAME)."
)


@contextlib.contextmanager
def _option_errors(options: dict[str, Any]) -> Iterator[None]:
    """Storage options a storage does not take are reported against ``-O/--option``."""
    from ._errors import StorageError

    try:
        yield
    except StorageError as exc:
        if options and "option" in str(exc):
            raise StorageError(f"-O/--option: {exc}") from exc
        raise


def _butler(root: str, options: tuple[str, ...]) -> Any:
    from ._butler import Butler

    parsed = _parse_pairs(options, "--option")
    with _option_errors(parsed):
        return Butler(root, **parsed)


def _output_format(registry: Any, output: str, what: str, flag: str) -> str:
    """The format an output's name implies, or an error naming the output and ``flag``."""
    from ._errors import FormatError
    from ._urls import split_file_uri

    try:
        return str(registry.identify_format(split_file_uri(output)[1]))
    except FormatError as exc:
        raise FormatError(f"{what} {output!r}: {exc}; or give {flag} FORMAT") from None


def _check_format(registry: Any, name: str | None, flag: str) -> None:
    """An unknown ``--format``/``--from``/``--to`` fails first, naming the flag."""
    if name is not None:
        with naming(f"{flag} {name}"):
            registry.format(name)


# -- runs and collections ------------------------------------------------------------------

_allow_pickle = click.option(
    "--allow-pickle",
    is_flag=True,
    help="Unpickle a pickle: runs code chosen by its writer, so only if you trust them.",
)

_allow_import = click.option(
    "--allow-import",
    "allow_imports",
    multiple=True,
    metavar="PACKAGE",
    help="Import classes of this top-level package when a dataset names one (repeatable): "
    "runs its code, so only if you trust it.",
)

_write_run = click.option(
    "--run", metavar="RUN", help="The run to write into (default: the default run)."
)


def _read_collections(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--run`` and ``--collections`` of the commands that read datasets."""
    func = click.option(
        "--collections", "collections", multiple=True, metavar="A,B,...",
        help="Search these runs and chains, in order; the first holding the data ID wins "
        "(comma-separated or repeated; default: the default run).",
    )(func)  # fmt: skip
    return click.option("--run", metavar="RUN", help="Read from run RUN only.")(func)


def _run_name(run: str, flag: str = "--run") -> str:
    """A run name given on the command line, checked (errors name ``flag``)."""
    from ._runs import check_run_name

    with naming(f"{flag} {run}"):
        return check_run_name(run)


def _searched(run: str | None, collections: tuple[str, ...]) -> tuple[str, ...] | None:
    """The collections a read searches: ``--run X`` is ``(X,)``; each ``--collections``
    value is split on commas; ``None`` (neither given) is the Butler's default."""
    from ._runs import check_run_name

    if run is not None and collections:
        raise click.UsageError(
            "--run reads one run and --collections searches several: give one of them"
        )
    if run is not None:
        return (_run_name(run),)
    if not collections:
        return None
    names: list[str] = []
    for value in collections:
        items = [item.strip() for item in value.split(",")]
        if not all(items):
            raise click.BadParameter(
                f"{value!r} has an empty name; give names separated by commas (B,A)",
                param_hint="--collections",
            )
        for item in items:
            with naming(f"--collections {value}"):
                names.append(check_run_name(item, what="collection"))
    return tuple(names)


def _has_run(b: Any, name: str) -> bool:
    """True for the default run, a chain, or a run holding datasets (one listing call)."""
    from ._runs import DEFAULT_RUN, run_prefix

    if name == DEFAULT_RUN or name in b.chains:
        return True
    return next(iter(b.storage.list(run_prefix(name))), None) is not None


def _reading_butler(
    root: str,
    options: tuple[str, ...],
    run: str | None,
    collections: tuple[str, ...],
    allow_imports: tuple[str, ...] = (),
) -> Any:
    """A Butler reading the collections ``--run``/``--collections`` name (checked before the
    repository is opened); a name that is neither a chain nor a run holding datasets is
    warned about, as it is most likely mistyped."""
    from ._butler import Butler

    searched = _searched(run, collections)
    for package in allow_imports:
        if not package.isidentifier():
            raise click.BadParameter(
                f"{package!r} is not a top-level package name", param_hint="--allow-import"
            )
    parsed = _parse_pairs(options, "--option")
    with _option_errors(parsed):
        b = Butler(root, collections=searched, allow_imports=allow_imports, **parsed)
    flag = "--run" if run is not None else "--collections"
    for name in searched or ():
        if not _has_run(b, name):
            warn(
                f"{flag} {name}: no run of that name holds datasets and no chain has that "
                f"name (see 'butler runs {root}')"
            )
    return b


def _in_run(run: str) -> str:
    """`` in run 'X'`` for messages about a dataset of a run other than the default one."""
    from ._runs import DEFAULT_RUN

    return "" if run == DEFAULT_RUN else f" in run {run!r}"


def _writing_butler(root: str, options: tuple[str, ...], run: str | None) -> Any:
    """A Butler writing into ``--run`` (refused when it names a chain)."""
    from ._butler import Butler
    from ._errors import InvalidDataIdError

    name = None if run is None else _run_name(run)
    parsed = _parse_pairs(options, "--option")
    with _option_errors(parsed):
        b = Butler(root, run=name, **parsed)
    if name is not None and name in b.chains:
        raise InvalidDataIdError(
            f"--run {name}: {name!r} is a collection chain ({', '.join(b.chains[name])}), not "
            f"a run; datasets are written into runs"
        )
    return b


@main.command()
@click.argument("root")
@click.option("--checksum", is_flag=True, help="Keep a sha256 per dataset for 'butler verify'.")
@click.option(
    "--allow-pickle",
    is_flag=True,
    help="Record that pickle datasets are expected (readers still opt in: get --allow-pickle).",
)
@_option
@click.pass_context
def init(ctx: click.Context, root: str, checksum: bool, allow_pickle: bool, options: Any) -> None:
    """Create a repository at ROOT (a path or URI).

    \b
    Examples:
      butler init ./repo --checksum
      butler init s3://bucket/prefix -O endpoint_url=http://127.0.0.1:9000
      butler init sqlite:///repo.db
    """
    from ._butler import Butler

    parsed = _parse_pairs(options, "--option")
    with _option_errors(parsed):
        b = Butler.create(root, checksum=checksum, allow_pickle=allow_pickle, **parsed)
    _emit(ctx, {"root": b.storage.uri(), "storage": b.storage.type_name},
          f"created {b.storage.type_name} repository {b.storage.uri()}")  # fmt: skip


@main.command()
@click.argument("root")
@click.argument("name")
@click.option("--type", "python_type", required=True, help="Python type (dotted name).")
@click.option("--format", "file_format", required=True, help="Format of the datasets.")
@click.option("--template", help="Key template (default: NAME/{dim1}/{dim2}.<ext>).")
@click.option(
    "--dimension", "-d", "dimensions", multiple=True, metavar="NAME[=int|str]",
    help="Data ID key, 'str' unless '=int' (repeatable; default: from --template).",
)  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace a different existing definition.")
@_option
@click.pass_context
def define(
    ctx: click.Context, root: str, name: str, python_type: str, file_format: str,
    template: str | None, dimensions: tuple[str, ...], overwrite: bool, options: Any,
) -> None:  # fmt: skip
    """Define (or check) the dataset type NAME in the repository at ROOT.

    \b
    Examples:
      butler define ./repo calexp --type numpy.ndarray --format fits -d visit=int -d ccd=int
      butler define ./repo calexp --type numpy.ndarray --format npy \\
          --template "calexp/{visit:06d}/{ccd}.npy"
    """
    dims: dict[str, str] | None = None
    if dimensions:
        dims = {}
        for item in dimensions:
            key, _, kind = item.partition("=")
            if kind not in ("", "int", "str") or not key:
                raise click.BadParameter(f"{item!r} is not NAME, NAME=int or NAME=str",
                                         param_hint="--dimension")  # fmt: skip
            if key in dims:  # as for --id: a repeated key is an error, never the last one
                raise click.BadParameter(f"{key!r} is given twice", param_hint="--dimension")
            dims[key] = kind or "str"
    from ._policy import python_type_name

    b = _butler(root, options)
    _check_format(b.registry, file_format, "--format")
    with naming(f"--type {python_type}"):
        python_type_name(python_type)
    dt = b.register_dataset_type(
        name, python_type, file_format, template, dimensions=dims, overwrite=overwrite
    )
    _emit(ctx, dt.to_dict(), f"dataset type {name}: {dt.python_type}, {dt.format}, {dt.template}")


@main.command(name="plugins")
@click.pass_context
def plugins_cmd(ctx: click.Context) -> None:
    """List discovered plugins, conflicts and the serializer matrix.

    \b
    Example:
      butler plugins
    """
    from ._plugins import discovery

    found = discovery()
    reg = found.registry
    rows = [
        {"name": p.name, "distribution": p.distribution, "version": p.version,
         "status": p.status, "error": p.error}
        for p in found.plugins
    ]  # fmt: skip
    matrix = sorted(
        ({"type": s.python_type, "format": s.format, "storage": s.storage,
          "distribution": s.distribution} for s in reg.serializers.values()),
        key=lambda r: (r["format"], r["type"], r["storage"]),
    )  # fmt: skip
    conflicts = [
        {"kind": c.kind, "key": list(c.key), "candidates": list(c.candidates), "winner": c.winner}
        for c in found.conflicts
    ]
    lines = ["Plugins:"]
    for r in rows:
        line = f"  {r['name']:<10} {r['distribution']:<14} {r['version']:<10} {r['status']}"
        lines.append(line + (f"  ({r['error']})" if r["error"] else ""))
    lines.append("Storages: " + ", ".join(
        f"{n} ({', '.join(s.schemes)}) [{s.distribution}]" for n, s in sorted(reg.storages.items())
    ))  # fmt: skip
    lines.append("Formats: " + ", ".join(
        f"{n} ({' '.join(d.extensions)}) [{d.distribution}]" for n, d in sorted(reg.formats.items())
    ))  # fmt: skip
    lines.append("Serializers (format / storage / type / from):")
    lines += [
        f"  {m['format']:<10} {m['storage']:<9} {m['type']:<40} {m['distribution']}" for m in matrix
    ]
    if conflicts:
        lines.append("Conflicts (winner first chosen by BUTLER_PREFER, priority, name):")
        lines += [
            f"  {c['kind']} {tuple(c['key'])}: {', '.join(c['candidates'])} -> {c['winner']}"
            for c in conflicts
        ]
    _emit(
        ctx,
        {"plugins": rows, "serializers": matrix, "conflicts": conflicts,
         "storages": sorted(reg.storages), "formats": sorted(reg.formats)},
        "\n".join(lines),
    )  # fmt: skip


def _query_ids(b: Any, dataset_type: str, ids: tuple[str, ...]) -> dict[str, Any]:
    """``--id`` of ``butler ls``: constraints for `Butler.datasets`, typed by dimension.

    ``KEY=VALUE`` is one value; ``KEY=A,B,C`` any of those values (items stripped of
    surrounding spaces); for an ``int`` dimension ``KEY=A..B`` is the inclusive range
    ``A <= value <= B`` (``A..`` and ``..B`` leave one end open). A string value holding a
    comma is asked for with ``--where "band = 'a,b'"``.
    """
    from ._errors import InvalidDataIdError, QueryError
    from ._mapper import coerce_value
    from ._query import MAX_IN_VALUES

    raw = _split_pairs(ids, "--id")
    dt = b.dataset_type(dataset_type)
    dims = dict(dt.dimensions)
    known = ", ".join(f"{d} ({k})" for d, k in dims.items()) or "none"
    result: dict[str, Any] = {}
    for key, value in raw.items():
        flag = f"--id {key}={value}"
        if key not in dims:
            raise InvalidDataIdError(
                f"{flag}: dataset type {dataset_type!r} has no dimension {key!r}; "
                f"its dimensions are {known}"
            )

        def typed(text: str, flag: str = flag, key: str = key) -> Any:
            try:
                return coerce_value(dt, key, text)
            except InvalidDataIdError as exc:
                raise InvalidDataIdError(
                    f"{flag}: dimension {key!r} of dataset type {dataset_type!r} is "
                    f"{dims[key]}: {exc}"
                ) from None

        is_int = dims[key] == "int"
        if "," in value:
            items = [item.strip() for item in value.split(",")]
            if not all(items):
                raise QueryError(
                    f"{flag}: empty item in a list; give values separated by commas ({key}=1,2,5)"
                )
            if is_int and any(".." in item for item in items):
                raise QueryError(
                    f"{flag}: a list cannot hold a range; give one range ({key}=1..5) or "
                    f"a list of values ({key}=1,2,5), or use --where"
                )
            if len(items) > MAX_IN_VALUES:
                raise QueryError(
                    f"{flag}: {len(items)} values; at most {MAX_IN_VALUES} are allowed"
                )
            result[key] = [typed(item) for item in items]
        elif is_int and ".." in value:
            result[key] = _int_range(flag, key, value, typed)
        else:
            result[key] = typed(value)
    return result


def _int_range(flag: str, key: str, value: str, typed: Callable[[str], Any]) -> slice:
    """``A..B`` (inclusive; either end may be left out) as the half-open ``slice(A, B+1)``."""
    from ._errors import QueryError

    low, _, high = (part.strip() for part in value.partition(".."))
    if (not low and not high) or ".." in high:
        raise QueryError(
            f"{flag}: a range is FIRST..LAST (inclusive), FIRST.. or ..LAST ({key}=100..199)"
        )
    start = typed(low) if low else None
    last = typed(high) if high else None
    if start is not None and last is not None and start > last:
        raise QueryError(
            f"{flag}: empty range: {start} is above {last} (a range is FIRST..LAST, inclusive)"
        )
    # No stored value has 30 digits or more (data IDs refuse them): LAST at that edge is
    # the same as an open end.
    stop = None if last is None or last + 1 >= 10**30 else last + 1
    return slice(start, stop)


@contextlib.contextmanager
def _query_flags() -> Iterator[None]:
    """`QueryError` messages in command-line terms: ``--where``, ``--order-by``."""
    from ._errors import QueryError

    try:
        yield
    except QueryError as exc:
        message = str(exc)
        for python, flag in (("where ", "--where "), ("order_by ", "--order-by ")):
            if message.startswith(python):
                raise QueryError(flag + message[len(python) :]) from exc
        raise


def _order_by(b: Any, dataset_type: str, terms: tuple[str, ...]) -> list[str]:
    """Each ``--order-by`` checked on its own (errors show the flag's value), then together."""
    from ._errors import QueryError
    from ._query import parse_order_by

    dt = b.dataset_type(dataset_type)
    seen: dict[str, str] = {}
    for term in terms:
        with _query_flags():
            parsed = parse_order_by(term, dt)
        for name, _ in parsed:
            if name in seen:
                raise QueryError(
                    f"--order-by {term}: dimension {name!r} is already ordered by "
                    f"--order-by {seen[name]}"
                )
            seen[name] = term
    return list(terms)


@main.command(name="ls")
@click.argument("root")
@click.argument("dataset_type", required=False)
@click.option(
    "--id", "ids", multiple=True, metavar="KEY=VALUE",
    help="Only these data IDs (repeatable): KEY=V, KEY=A,B,C (any of), KEY=FIRST..LAST "
    "(int dimension, inclusive; FIRST.. or ..LAST leave an end open).",
)  # fmt: skip
@click.option(
    "--where", metavar="EXPR",
    help="Only data IDs matching EXPR: \"visit >= 100 and band in ('g', 'r')\".",
)  # fmt: skip
@click.option("--limit", type=click.IntRange(min=0), metavar="N", help="At most N data IDs.")
@click.option(
    "--order-by", "order_by", multiple=True, metavar="DIM",
    help="Order by DIM (-DIM descending; repeatable); other dimensions follow in declared order.",
)  # fmt: skip
@click.option("--count", "count_only", is_flag=True, help="Print only how many match.")
@_read_collections
@_option
@click.pass_context
def ls_cmd(
    ctx: click.Context, root: str, dataset_type: str | None, ids: Any, where: str | None,
    limit: int | None, order_by: tuple[str, ...], count_only: bool, run: str | None,
    collections: tuple[str, ...], options: Any,
) -> None:  # fmt: skip
    """List dataset types, or the data IDs of DATASET_TYPE's stored datasets.

    Data IDs come from the repository's dataset index (or, without one, from listing the
    storage), in order of their dimensions unless --order-by says otherwise. They are
    searched for in the default run, in --run RUN only, or in the runs and chains of
    --collections (in order; a data ID held by several comes once, with the run it was
    found in).

    \b
    Examples:
      butler ls ./repo
      butler ls ./repo calexp --id visit=1
      butler ls ./repo calexp --id visit=100..199 --id ccd=1,2,5
      butler ls ./repo calexp --where "visit >= 100 and band in ('g', 'r')" --count
      butler ls ./repo calexp --order-by -visit --limit 10
      butler ls ./repo calexp --collections u/me/rerun,default
    """
    if dataset_type is None:
        given = [flag for flag, value in (("--id", ids), ("--where", where), ("--limit", limit),
                 ("--order-by", order_by), ("--count", count_only), ("--run", run),
                 ("--collections", collections)) if value]  # fmt: skip
        if given:
            raise click.UsageError(f"{', '.join(given)} need(s) a DATASET_TYPE")
    if count_only and (limit is not None or order_by):
        raise click.UsageError("--count counts every match: --limit and --order-by do not apply")
    b = _reading_butler(root, options, run, collections)
    if dataset_type is None:
        types = {n: d.to_dict() for n, d in sorted(b.dataset_types.items())}
        text = "\n".join(f"{n}  ({d['python_type']}, {d['format']}, {d['template']})"
                         for n, d in types.items())  # fmt: skip
        _emit(ctx, types, text or "(no dataset types)")
        return
    constraints = _query_ids(b, dataset_type, ids)
    order = _order_by(b, dataset_type, order_by)
    with _query_flags():
        if count_only:
            n = b.count(dataset_type, where, **constraints)
            _emit(ctx, n, str(n))
            return
        if collections:  # several runs searched: say which one each data ID is in
            located = [
                {"data_id": dict(loc.data_id), "run": loc.run}
                for loc in b.stored_locations(
                    dataset_type, where, limit=limit, order_by=order or None, **constraints
                )
            ]
            text = "\n".join(
                " ".join(f"{k}={v}" for k, v in item["data_id"].items()) + f"  (run {item['run']})"
                for item in located
            )
            _emit(ctx, located, text or "(no datasets)")
            return
        found = list(
            b.datasets(dataset_type, where, limit=limit, order_by=order or None, **constraints)
        )
    text = "\n".join(" ".join(f"{k}={v}" for k, v in d.items()) for d in found)
    _emit(ctx, found, text or "(no datasets)")


@main.command()
@click.argument("root")
@_option
@click.pass_context
def info(ctx: click.Context, root: str, options: Any) -> None:
    """Show the storage, the dataset index, and per dataset type its format and number of
    datasets (from the index; never by listing the whole storage).

    \b
    Example:
      butler info ./repo
    """
    from ._urls import mask_url

    b = _butler(root, options)
    index_line, counts, problem = _index_state(b, root)
    from ._disassembly import describe_components

    types = {
        name: {"python_type": dt.python_type, "format": dt.format,
               "count": None if counts is None else counts.get(name, 0),
               **describe_components(b.registry, dt)}
        for name, dt in sorted(b.dataset_types.items())
    }  # fmt: skip
    index = b.index if counts is not None else None
    data: dict[str, Any] = {
        "root": b.storage.uri(), "storage": b.storage.type_name, "checksum": b.policy.checksum,
        "index": None if index is None else mask_url(index.description, hide_user=True),
        "dataset_types": types,
    }  # fmt: skip
    if problem:
        data["index_error"] = problem
    lines = [f"repository: {data['root']}", f"storage:    {data['storage']}",
             f"checksums:  {'on' if b.policy.checksum else 'off'}", f"index:      {index_line}",
             "dataset types:"]  # fmt: skip
    lines += [
        f"  {n:<20} {t['format']:<8} "
        + ("not indexed" if t["count"] is None else f"{t['count']:>7} datasets")
        + f"  {t['python_type']}"
        + _components_line(t)
        for n, t in types.items()
    ]
    _emit(ctx, data, "\n".join(lines))


def _components_line(described: dict[str, Any]) -> str:
    """``info``'s components of one dataset type: ``\n    components: wcs*, mask*, data``
    (``*``: read directly, without the whole dataset)."""
    names = described.get("components")
    if not names:
        return ""
    direct = set(described.get("direct", ()))
    shown = ", ".join(f"{n}*" if n in direct else n for n in names)
    how = "disassembled" if described.get("disassembled") else "* read directly"
    return f"\n{'':<4}components ({how}): {shown}"


def _index_state(b: Any, root: str) -> tuple[str, dict[str, int] | None, str | None]:
    """``info``'s index line, the datasets per type the index holds (``None``: no index
    to ask) and why an index the repository records cannot be used."""
    from ._urls import mask_url

    recorded = b.policy.index
    shown = mask_url(recorded or "", hide_user=True)
    try:
        index = b.index
        counts = None if index is None else index.counts()
    except ButlerError as exc:
        problem = " ".join(str(exc).split())
        return f"{shown}: cannot be used ({problem})", None, problem
    if index is not None and b._query_index() is None:
        problem = (
            "incomplete (lost and created again, or a reindex did not finish): queries "
            f"list the storage until `butler reindex {mask_url(root, hide_user=True)}`"
        )
        return f"{mask_url(index.description, hide_user=True)}: {problem}", None, problem
    if index is not None:
        return mask_url(index.description, hide_user=True), counts, None
    if recorded:
        problem = f"the {shown} index is not available to this reader: queries list the storage"
        return problem, None, problem
    return (
        f"none: queries list the storage (run `butler reindex {mask_url(root, hide_user=True)}` "
        f"to create one)",
        None,
        None,
    )


@contextlib.contextmanager
def _reindex_progress() -> Iterator[Callable[[str, int, int], None] | None]:
    """A rich progress bar per dataset type (done/total datasets) on a terminal; otherwise
    nothing."""
    if not sys.stderr.isatty():
        yield None
        return
    try:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    except ImportError:
        yield None
        return
    from rich.console import Console

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        tasks: dict[str, Any] = {}

        def update(dataset_type: str, done: int, total: int) -> None:
            if dataset_type not in tasks:
                tasks[dataset_type] = bar.add_task(dataset_type, total=total)
            bar.update(tasks[dataset_type], completed=done, total=total)

        yield update


@main.command()
@click.argument("root")
@click.option("--type", "dataset_type", metavar="NAME", help="Only this dataset type.")
@click.option(
    "--index", "index_url", metavar="URL",
    help="For a repository without an index: where to create it ('embedded', or a database "
    "URL of butler-db). Credentials in URL are used, never recorded.",
)  # fmt: skip
@_option
@click.pass_context
def reindex(
    ctx: click.Context, root: str, dataset_type: str | None, index_url: str | None, options: Any
) -> None:
    """Rebuild or repair the dataset index from the storage.

    Lists every dataset, reads the metadata stored with it, adds missing rows, refreshes
    the others and drops rows whose bytes are gone. An interrupted reindex resumes where it
    stopped. A repository without an index gets one (the storage's own, or --index URL).

    \b
    Examples:
      butler reindex ./repo
      butler reindex ./repo --type calexp
      butler reindex s3://bucket/repo --index postgresql+psycopg://user@db.example/butler
    """
    from ._butler import Butler
    from ._errors import StorageError
    from ._urls import mask_url, strip_credentials

    if index_url is not None and index_url.strip().lower() == "none":
        raise click.BadParameter(
            "'none' creates no index; give 'embedded' or a database URL", param_hint="--index"
        )
    parsed = _parse_pairs(options, "--option")
    with _option_errors(parsed):
        b = Butler(root, **parsed)
    recorded = b.policy.index
    if index_url is not None and recorded:
        if strip_credentials(index_url) != recorded:
            raise StorageError(
                f"--index {mask_url(index_url, hide_user=True)}: the repository already has "
                f"its index at {mask_url(recorded, hide_user=True)!r}; --index creates one "
                f"only for a repository without an index"
            )
        if recorded != "embedded":  # the recorded URL, with the credentials given here
            b.close()
            with _option_errors(parsed):
                b = Butler(root, index=index_url, **parsed)
    if dataset_type is not None:
        with naming(f"--type {dataset_type}"):
            b.dataset_type(dataset_type)
    if b.index is None:
        if recorded:
            raise StorageError(
                f"the repository records its index ({mask_url(recorded, hide_user=True)}), "
                f"but this reader cannot open it (no write access to the repository?); "
                f"reindex as a user who can write it"
            )
        from ._reindex import configure_index

        flag = f"--index {mask_url(index_url, hide_user=True)}" if index_url else None
        with naming(flag) if flag else contextlib.nullcontext():
            configure_index(b, index_url)
    with _reindex_progress() as progress:
        report = b.reindex(dataset_type, progress=progress)
    index = b.index
    where = mask_url(index.description, hide_user=True) if index is not None else "?"
    data = {"index": where, **dataclasses.asdict(report)}
    text = (
        f"index {where}: listed {report.listed} datasets, indexed {report.indexed}, "
        f"dropped {report.dropped} stale rows, resumed {report.resumed} (done by an "
        f"interrupted run)"
    )
    _emit(ctx, data, text)


@main.command()
@click.argument("root")
@click.argument("dataset_type")
@click.argument("file")
@_ids
@click.option("--format", "file_format", help="Format of FILE (default: identified).")
@_hdu_option
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset (of the same run).")
@_write_run
@_option
@click.pass_context
def put(
    ctx: click.Context, root: str, dataset_type: str, file: str, ids: Any,
    file_format: str | None, hdu: str | None, overwrite: bool, run: str | None, options: Any,
) -> None:  # fmt: skip
    """Read FILE (format from its extension or first bytes) and store it as a dataset.

    FILE is read as the dataset type's python type; what that type cannot hold (a FITS
    file's header cards and other HDUs, for a numpy.ndarray dataset type) is named in a
    warning on stderr: define the dataset type as astropy.io.fits.HDUList to keep it all.

    The dataset goes into the default run, or into --run RUN (a run holds one dataset per
    data ID; the same data ID can be stored in any number of runs).

    \b
    Examples:
      butler put ./repo calexp image.fits --id visit=1 --id ccd=2
      butler put ./repo calexp multi.fits --hdu SCI --id visit=1 --id ccd=2
      butler put ./repo calexp image.fits --id visit=1 --id ccd=2 --run u/me/rerun-1
    """
    b = _writing_butler(root, options, run)
    dt = b.dataset_type(dataset_type)
    data_id = _data_id(b, dataset_type, ids)  # a mistyped --id fails before FILE is read
    _check_format(b.registry, file_format, "--format")
    obj = read_standalone(
        input_file(file, "FILE"), file_format, dt.python_type, b.registry, hdu=hdu_option(hdu),
        keep_all="to keep them, store FILE in a dataset type defined with --type {whole}",
    )  # fmt: skip
    with _progress(f"put {dataset_type}", file_size(file)) as progress:
        loc = b.put(obj, dataset_type, data_id, overwrite=overwrite, progress=progress)
    _emit(ctx, {"dataset_type": dataset_type, "data_id": dict(loc.data_id), "uri": loc.uri,
                "run": loc.run},
          f"stored {loc.describe()}{_in_run(loc.run)}")  # fmt: skip


@main.command()
@click.argument("root")
@click.argument("dataset_type")
@_ids
@click.option("-o", "--output", required=True, help="File to write (format from its name).")
@click.option("--format", "file_format", help="Format of the output (default: from its name).")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@_allow_pickle
@_allow_import
@_read_collections
@_option
@click.pass_context
def get(
    ctx: click.Context, root: str, dataset_type: str, ids: Any, output: str,
    file_format: str | None, overwrite: bool, allow_pickle: bool,
    allow_imports: tuple[str, ...], run: str | None, collections: tuple[str, ...],
    options: Any,
) -> None:  # fmt: skip
    """Read a dataset and write it to a file, in the format implied by the file name.

    The dataset is read from the default run, from --run RUN, or from the first of the
    runs and chains of --collections holding the data ID.

    \b
    Examples:
      butler get ./repo calexp --id visit=1 --id ccd=2 -o calexp.fits
      butler get ./repo calexp --id visit=1 --id ccd=2 -o calexp.h5
      butler get ./repo calexp --id visit=1 --id ccd=2 -o calexp.dat --format npy
      butler get ./repo calexp --id visit=1 --id ccd=2 -o c.fits --collections rerun-2,rerun-1
      butler get ./repo calexp.wcs --id visit=1 --id ccd=2 -o wcs.fits   (one component)
    """
    from ._errors import DatasetNotFoundError
    from ._files import write_file
    from ._runs import run_key, run_prefix

    b = _reading_butler(root, options, run, collections, allow_imports)
    base = b._dataset_type_and_component(dataset_type)[0].name  # "calexp.wcs": calexp
    data_id = _data_id(b, base, ids)
    _check_format(b.registry, file_format, "--format")
    location = b.location(base, data_id)
    try:  # the run the dataset would be read from, to name the file that is read
        found = b.ref(base, data_id).run
    except DatasetNotFoundError:
        found = location.run  # the get below says what was searched
    key = run_key(found, location.key[len(run_prefix(location.run)) :])
    check_output(output, "-o/--output", overwrite, source=b.storage.uri(key))
    if file_format is None:  # before the dataset is read, which may be long
        _output_format(b.registry, output, "-o/--output", "--format")
    total = b.storage.size(key) if b.storage.exists(key) else None
    with _progress(f"get {dataset_type}", total) as progress:
        obj = b.get(dataset_type, data_id, progress=progress, allow_pickle=allow_pickle or None)
    write_file(obj, output, format=file_format, registry=b.registry, overwrite=overwrite)
    _emit(ctx, {"output": output}, f"wrote {output}")


@main.command()
@click.argument("root")
@click.argument("dataset_type")
@_ids
@click.option("--run", metavar="RUN", help="Remove it from run RUN (default: the default run).")
@_option
@click.pass_context
def rm(
    ctx: click.Context, root: str, dataset_type: str, ids: Any, run: str | None, options: Any
) -> None:
    """Remove a dataset (of the default run, or of --run RUN; other runs keep theirs).

    \b
    Examples:
      butler rm ./repo calexp --id visit=1 --id ccd=2
      butler rm ./repo calexp --id visit=1 --id ccd=2 --run u/me/rerun-1
    """
    b = _writing_butler(root, options, run)
    data_id = _data_id(b, dataset_type, ids)
    b.remove(dataset_type, data_id)
    _emit(ctx, {"removed": data_id, "run": b.run},
          f"removed {dataset_type} {data_id}{_in_run(b.run)}")  # fmt: skip


@main.command()
@click.argument("root")
@_option
@click.pass_context
def verify(ctx: click.Context, root: str, options: Any) -> None:
    """Check every dataset's size (and checksum, when kept), and the dataset index against
    the storage both ways; exit 1 if anything is damaged or the index is out of step.

    \b
    Example:
      butler verify ./repo
    """
    from ._urls import mask_url

    b = _butler(root, options)
    report = b.verify()
    kinds = ("missing", "truncated", "corrupted", "unrecorded", "unindexed", "stale",
             "unreferenced")  # fmt: skip
    data: dict[str, Any] = {"checked": report.checked}
    data.update({k: getattr(report, k) for k in kinds})
    lines = [f"checked {report.checked} datasets: {len(report.ok)} ok"]
    for kind in kinds:
        lines += [f"{kind}: {item}" for item in getattr(report, kind)]
    if report.unindexed or report.stale:
        lines.append(
            f"the dataset index is out of step with the storage: run `butler reindex "
            f"{mask_url(root, hide_user=True)}` to repair it"
        )
    if report.unreferenced:  # debris of killed writers: invisible to readers
        lines.append(f"unreferenced parts are removed by `butler purge {mask_url(root)}`")
    _emit(ctx, data, "\n".join(lines))
    if not report.healthy:
        ctx.exit(1)


def _seconds(value: float) -> float:
    # FloatRange lets NaN through (no comparison holds): debris is never older than NaN,
    # so purge would silently remove nothing.
    if math.isnan(value):
        raise click.BadParameter("'nan' is not a number of seconds", param_hint="--older-than")
    return value


@main.command()
@click.argument("root")
@click.option(
    "--older-than",
    default=3600.0,
    show_default=True,
    type=click.FloatRange(min=0),
    callback=lambda ctx, param, value: _seconds(value),
    metavar="SECONDS",
    help="Only debris at least this old (a live writer's temporary file is younger).",
)
@_option
@click.pass_context
def purge(ctx: click.Context, root: str, older_than: float, options: Any) -> None:
    """Remove what killed writers left behind (hidden temporary files, incomplete S3
    uploads). Datasets are never touched.

    \b
    Example:
      butler purge ./repo --older-than 600
    """
    b = _butler(root, options)
    removed = b.purge_debris(older_than)
    text = "\n".join(f"removed {item}" for item in removed)
    _emit(ctx, {"removed": removed}, text or "nothing to purge")


@main.command()
@click.argument("src")
@click.argument("dst")
@click.option("--from", "src_format", help="Format of SRC (default: identified).")
@click.option("--to", "dst_format", help="Format of DST (default: from its name).")
@click.option(
    "--type", "python_type",
    help="Python type to read SRC as (dotted name; default: the richest type DST can hold).",
)  # fmt: skip
@_hdu_option
@click.option("--overwrite", is_flag=True, help="Replace DST if it exists (never SRC itself).")
@_allow_pickle
@_option
@click.pass_context
def convert(
    ctx: click.Context, src: str, dst: str, src_format: str | None, dst_format: str | None,
    python_type: str | None, hdu: str | None, overwrite: bool, allow_pickle: bool,
    options: Any,
) -> None:  # fmt: skip
    """Convert a file or URI to another format or place, keeping all it holds.

    Without --type, SRC is read as the type butler recorded when it wrote it, else as the
    richest type DST's format can write (a FITS file as its whole HDUList when DST is FITS);
    a conversion that would drop HDUs holding data is refused (pick --hdu / --type), one
    that drops header cards is warned about on stderr.

    \b
    Examples:
      butler convert image.fits image.npy
      butler convert multi.fits sci.npy --hdu SCI
      butler convert catalog.fits catalog.h5 --hdu 1 --type astropy.table.Table
      butler convert s3://bucket/img.fits ./img.fits -O endpoint_url=http://127.0.0.1:9000
    """
    from ._files import write_file

    storage_options = _parse_pairs(options, "--option")
    # -O options are for the remote end (a local file takes none of S3's): both ends get
    # them only when both are remote or both local.
    remote = [local_path(uri) is None for uri in (src, dst)]
    src_options, dst_options = (
        (storage_options if remote[0] or not any(remote) else {}),
        (storage_options if remote[1] or not any(remote) else {}),
    )
    from ._plugins import default_registry

    reg = default_registry()
    _check_format(reg, src_format, "--from")
    _check_format(reg, dst_format, "--to")
    check_output(dst, "DST", overwrite, source=src)
    input_file(src, "SRC")
    target = dst_format or _output_format(reg, dst, "DST", "--to")
    with _option_errors(src_options):
        obj = read_standalone(
            src, src_format, python_type, reg, hdu=hdu_option(hdu),
            dst_format=target, allow_pickle=allow_pickle, **src_options,
        )  # fmt: skip
    with _option_errors(dst_options):
        write_file(obj, dst, format=dst_format, overwrite=overwrite, registry=reg, **dst_options)
    _emit(ctx, {"src": src, "dst": dst}, f"converted {src} -> {dst}")


# -- runs, history, provenance, chains -------------------------------------------------------


@main.command(name="runs")
@click.argument("root")
@_option
@click.pass_context
def runs_cmd(ctx: click.Context, root: str, options: Any) -> None:
    """List the runs holding datasets, with how many each holds, and the collection chains
    (each with its members, searched in order).

    \b
    Example:
      butler runs ./repo
    """
    from ._runs import expand_collections

    b = _butler(root, options)
    counts = b.runs()
    chains = b.chains
    expanded = {name: list(expand_collections([name], chains)) for name in sorted(chains)}
    data = {
        "runs": counts,
        "chains": {name: {"members": chains[name], "runs": expanded[name]} for name in expanded},
    }
    width = max((len(name) for name in [*counts, *chains]), default=0)
    lines = ["runs:"] if counts else ["runs: none holds datasets"]
    lines += [f"  {name:<{width}}  {n:>7} datasets" for name, n in counts.items()]
    if chains:
        lines.append("chains (members searched in order):")
        for name, runs in expanded.items():
            line = f"  {name:<{width}}  {', '.join(chains[name])}"
            if runs != chains[name]:
                line += f"  (runs {', '.join(runs)})"
            lines.append(line)
    _emit(ctx, data, "\n".join(lines))


@main.command()
@click.argument("root")
@click.argument("dataset_type")
@_ids
@_option
@click.pass_context
def history(ctx: click.Context, root: str, dataset_type: str, ids: Any, options: Any) -> None:
    """List every run's dataset for one data ID, oldest first: run, creation time (UTC),
    size and checksum (the first 12 hex digits of its sha256, when kept).

    \b
    Example:
      butler history ./repo calexp --id visit=1 --id ccd=2
    """
    from ._errors import DatasetNotFoundError

    b = _butler(root, options)
    data_id = _data_id(b, dataset_type, ids)
    versions = b.history(dataset_type, data_id)
    if not versions:
        raise DatasetNotFoundError(
            f"dataset {dataset_type!r} {data_id} is stored in no run of {b.storage.uri()!r}"
        )
    rows = [
        {"run": v.run, "created": v.created, "size": v.size, "checksum": v.checksum}
        for v in versions
    ]
    width = max(len(v.run) for v in versions)
    lines = [
        f"{r['run']:<{width}}  {r['created'] or '(creation time unknown)':<27}  "
        f"{'?' if r['size'] is None else r['size']:>10} bytes  "
        f"{'sha256 ' + r['checksum'][:12] if r['checksum'] else 'no checksum'}"
        for r in rows
    ]
    _emit(ctx, rows, "\n".join(lines))


def _ref_id(ref: Any) -> tuple[Any, ...]:
    return (ref.dataset_type, tuple(sorted(ref.data_id.items())), ref.run)


def _ref_data(ref: Any) -> dict[str, Any]:
    return {
        "dataset_type": ref.dataset_type,
        "data_id": dict(ref.data_id),
        "run": ref.run,
        "created": ref.created,
        "checksum": ref.checksum,
    }


def _provenance_data(prov: Any) -> dict[str, Any]:
    """One dataset of ``butler provenance``'s tree, as JSON."""
    recorded = any(
        (prov.user, prov.host, prov.python, prov.butler_version, prov.serializer, prov.inputs)
    )
    return {
        **_ref_data(prov.ref),
        "user": prov.user,
        "host": prov.host,
        "butler_version": prov.butler_version,
        "serializer": dict(prov.serializer),
        "python": prov.python,
        # ok: inputs listed below; raw: provenance recorded, no inputs; unrecorded: written
        # before butler recorded provenance (or by another tool).
        "status": "ok" if prov.inputs else "raw" if recorded else "unrecorded",
        "inputs": [],
    }


def _trace(b: Any, root: Any, depth: int | None) -> dict[str, Any]:
    """The provenance tree of ``root`` (a `Provenance`), inputs resolved in the run each
    was recorded in, depth first, without recursion (a chain may be long).

    An input no longer stored is ``missing``; one whose run now holds another version
    (overwritten since: other checksum or creation time) is ``replaced`` and not followed;
    one already shown (two inputs sharing an input) is ``repeated``; beyond ``depth``
    levels, a dataset's inputs are only counted (``not_shown``)."""
    from ._errors import ButlerError, DatasetNotFoundError, DatasetTypeError

    tree = _provenance_data(root)
    visited = {_ref_id(root.ref)}
    stack: list[tuple[Any, dict[str, Any], int]] = [(root, tree, 0)]
    while stack:
        prov, node, level = stack.pop()
        if not prov.inputs:
            continue
        if depth is not None and level >= depth:
            node["not_shown"] = len(prov.inputs)
            continue
        followed = []
        for ref in prov.inputs:
            child: dict[str, Any] = {**_ref_data(ref), "inputs": []}
            node["inputs"].append(child)
            if _ref_id(ref) in visited:
                child["status"] = "repeated"
                continue
            visited.add(_ref_id(ref))
            try:
                found = b.provenance(ref.dataset_type, ref.data_id, collections=[ref.run])
            except (DatasetNotFoundError, DatasetTypeError) as exc:
                child.update(status="missing", error=str(exc))
                continue
            except ButlerError as exc:  # corrupt metadata or input record
                child.update(status="unreadable", error=f"{type(exc).__name__}: {exc}")
                continue
            now = found.ref
            if (ref.checksum and now.checksum and ref.checksum != now.checksum) or (
                ref.created and now.created and ref.created != now.created
            ):
                child.update(status="replaced", now={"created": now.created,
                                                     "checksum": now.checksum})  # fmt: skip
                continue
            child.clear()
            child.update(_provenance_data(found))
            followed.append((found, child, level + 1))
        stack.extend(reversed(followed))
    return tree


def _node_label(node: dict[str, Any], depth: int | None) -> str:
    """One line of the provenance tree."""
    ids = " ".join(f"{k}={v}" for k, v in node["data_id"].items())
    label = f"{node['dataset_type']} {ids}  run {node['run']}  {node['created'] or '?'}"
    status = node["status"]
    if status == "raw":
        label += "  (raw: no recorded inputs)"
    elif status == "unrecorded":
        label += "  (no provenance recorded)"
    elif status == "repeated":
        label += "  (shown above)"
    elif status == "missing":
        label += f"  (missing: no longer in run {node['run']!r})"
    elif status == "unreadable":
        label += f"  (provenance unreadable: {' '.join(node['error'].split())})"
    elif status == "replaced":
        label += (
            f"  (replaced: run {node['run']!r} now holds another version, created "
            f"{node['now']['created'] or '?'}; its inputs are not the recorded ones)"
        )
    if node.get("not_shown"):
        label += f"  ({node['not_shown']} input(s) not shown: --depth {depth})"
    return label


def _tree_lines(tree: dict[str, Any], depth: int | None) -> list[str]:
    """The tree as text, drawn as rich's `Tree` draws it (``├── ``, ``│   ``...)."""
    lines = [_node_label(tree, depth)]
    stack: list[tuple[dict[str, Any], str, bool]] = [
        (child, "", i == len(tree["inputs"]) - 1) for i, child in enumerate(tree["inputs"])
    ][::-1]
    while stack:
        node, prefix, last = stack.pop()
        lines.append(prefix + ("└── " if last else "├── ") + _node_label(node, depth))
        inner = prefix + ("    " if last else "│   ")
        children = node["inputs"]
        stack.extend(
            reversed([(child, inner, i == len(children) - 1) for i, child in enumerate(children)])
        )
    return lines


def _rich_tree(tree: dict[str, Any], depth: int | None) -> Any:
    """The same tree as a rich `Tree` (for a terminal: statuses in colour)."""
    from rich.text import Text
    from rich.tree import Tree

    styles = {"missing": "red", "unreadable": "red", "replaced": "yellow", "repeated": "dim",
              "raw": "green", "unrecorded": "yellow"}  # fmt: skip

    def text(node: dict[str, Any]) -> Text:
        return Text(_node_label(node, depth), style=styles.get(node["status"], ""))

    top = Tree(text(tree))
    stack = [(top, tree)]
    while stack:
        parent, node = stack.pop()
        for child in node["inputs"]:
            stack.append((parent.add(text(child)), child))
    return top


@main.command()
@click.argument("root")
@click.argument("dataset_type")
@_ids
@_read_collections
@click.option(
    "--depth", type=click.IntRange(min=0), metavar="N",
    help="Follow inputs at most N levels deep (0: the dataset alone; default: all).",
)  # fmt: skip
@_option
@click.pass_context
def provenance(
    ctx: click.Context, root: str, dataset_type: str, ids: Any, run: str | None,
    collections: tuple[str, ...], depth: int | None, options: Any,
) -> None:  # fmt: skip
    """Show how a dataset was made: its run, creation time, user, host, versions (butler,
    the serializer's distribution, Python), and the tree of its inputs, each found in the
    run it was recorded in, back to datasets with no recorded inputs (raw).

    An input no longer stored is shown as missing, one overwritten since as replaced.

    \b
    Examples:
      butler provenance ./repo catalog --id visit=1
      butler provenance ./repo catalog --id visit=1 --collections rerun-2,rerun-1 --depth 2
      butler --json provenance ./repo catalog --id visit=1 --run rerun-2
    """
    b = _reading_butler(root, options, run, collections)
    data_id = _data_id(b, dataset_type, ids)
    found = b.provenance(dataset_type, data_id)
    tree = _trace(b, found, depth)
    if ctx.find_root().params.get("json_output"):
        click.echo(json.dumps(tree, indent=2, default=str))
        return
    serializer = " ".join(str(v) for v in (found.serializer.get("distribution"),
                                           found.serializer.get("version")) if v)  # fmt: skip
    who = "@".join(part for part in (found.user, found.host) if part)
    for name, value in (
        ("dataset", f"{dataset_type} {' '.join(f'{k}={v}' for k, v in found.ref.data_id.items())}"),
        ("run", found.ref.run),
        ("created", found.ref.created),
        ("by", who),
        ("butler", found.butler_version),
        ("serializer", serializer),
        ("python", found.python),
        ("checksum", found.ref.checksum and f"sha256 {found.ref.checksum}"),
    ):
        click.echo(f"{name + ':':<12}{value or '(not recorded)'}")
    click.echo("inputs:")
    if sys.stdout.isatty():
        try:
            from rich.console import Console
        except ImportError:  # rich is optional (butler-core[progress]): plain drawing below
            pass
        else:
            Console(highlight=False, soft_wrap=True).print(_rich_tree(tree, depth))
            return
    click.echo("\n".join(_tree_lines(tree, depth)))


@main.command()
@click.argument("root")
@click.argument("name")
@click.argument("members", nargs=-1, required=True)
@_option
@click.pass_context
def chain(ctx: click.Context, root: str, name: str, members: tuple[str, ...], options: Any) -> None:
    """Define (or redefine) the collection chain NAME: reading through it (--collections
    NAME) searches MEMBERS (runs or other chains) in the order given.

    \b
    Examples:
      butler chain ./repo latest rerun-2 rerun-1 default
      butler ls ./repo calexp --collections latest
    """
    from ._runs import check_run_name

    with naming(f"NAME {name}"):
        check_run_name(name, what="chain")
    for member in members:
        with naming(f"MEMBER {member}"):
            check_run_name(member, what="collection")
    b = _butler(root, options)
    before = b.chains.get(name)
    with naming(f"chain {name}"):
        runs = b.define_collection(name, list(members))
    for member in members:
        if member != name and not _has_run(b, member):
            warn(
                f"MEMBER {member}: no run of that name holds datasets and no chain has that "
                f"name (yet); reads through {name!r} skip it"
            )
    text = f"chain {name}: {', '.join(members)} (searches runs {', '.join(runs)})"
    if before is not None and before != list(members):
        text += f"; was {', '.join(before)}"
    _emit(ctx, {"chain": name, "members": list(members), "runs": runs, "was": before}, text)


@main.command(name="rm-run")
@click.argument("root")
@click.argument("run")
@click.option("--yes", is_flag=True, help="Confirm: remove every dataset of RUN.")
@_option
@click.pass_context
def rm_run(ctx: click.Context, root: str, run: str, yes: bool, options: Any) -> None:
    """Remove every dataset of the run RUN (needs --yes). Other runs keep theirs; chains
    naming RUN keep naming it (reads through them skip it).

    \b
    Example:
      butler rm-run ./repo u/me/rerun-1 --yes
    """
    from ._errors import DatasetNotFoundError, InvalidDataIdError

    _run_name(run, "RUN")
    b = _butler(root, options)
    if run in b.chains:
        raise InvalidDataIdError(
            f"RUN {run}: {run!r} is a collection chain ({', '.join(b.chains[run])}), not a run"
        )
    counts = b.runs()
    if not counts.get(run):
        held = ", ".join(f"{r} ({n})" for r, n in counts.items()) or "none"
        raise DatasetNotFoundError(
            f"RUN {run}: no run {run!r} holds datasets in {b.storage.uri()!r}; runs: {held}"
        )
    if not yes:
        raise click.UsageError(
            f"removing run {run!r} deletes its {counts[run]} dataset(s); pass --yes to confirm"
        )
    removed = b.remove_run(run)
    naming_it = sorted(c for c, members in b.chains.items() if run in members)
    text = f"removed run {run!r}: {removed} dataset(s)"
    if naming_it:
        text += f"; chains still naming it: {', '.join(naming_it)}"
    _emit(ctx, {"run": run, "removed": removed, "chains": naming_it}, text)


if __name__ == "__main__":  # pragma: no cover
    main()
