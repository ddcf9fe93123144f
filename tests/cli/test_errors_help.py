"""One-line errors (tracebacks only with --debug) and examples in every command's help."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

import butler
from butler._cli import main

Cli = Callable[..., Result]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["ls", "{tmp}/none"], "StorageError: no butler repository at '{tmp}/none'"),
        (["ls", "{repo}", "nope"], "DatasetTypeError: unknown dataset type 'nope'"),
        (["ls", "{repo}", "img", "--id", "ccd=1"], "InvalidDataIdError: --id ccd=1: dataset type"),
        (["init", "gopher://x/y"], "StorageError: "),
        (["rm", "{repo}", "img", "--id", "visit=../x"], "InvalidDataIdError: "),
        (["convert", "{tmp}/a.json", "{tmp}/b.unknown"], "DatasetNotFoundError: SRC '{tmp}/a"),
        (  # CLI spellings, not Python's None/True/False
            ["info", "{repo}", "-O", "xattrs=maybe"],
            "StorageError: -O/--option: posix option xattrs must be true, false or null, not",
        ),
    ],
)
def test_errors_are_one_line(
    cli: Cli, repo: Path, tmp_path: Path, args: list[str], expected: str
) -> None:
    args = [a.format(tmp=tmp_path, repo=repo) for a in args]
    result = cli(*args)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("butler: error: " + expected.format(tmp=tmp_path, repo=repo))
    assert "Traceback" not in result.stderr


def test_multi_line_messages_are_joined(cli: Cli, repo: Path, tmp_path: Path) -> None:
    source = tmp_path / "a.json"
    source.write_text('{"a": 1}')
    result = cli("convert", source, tmp_path / "a.npy")  # NoSerializerError lists a table
    assert result.exit_code == 1
    assert result.stderr.startswith("butler: error: NoSerializerError: No serializer for type "
                                    "'builtins.dict' in format 'npy'")  # fmt: skip
    assert result.stderr.count("\n") == 1 and " | json " in result.stderr


def test_unexpected_exceptions_are_one_line_too(
    cli: Cli, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(butler.Butler, "verify", broken)
    result = cli("verify", repo)
    assert result.exit_code == 1
    assert result.stderr == (
        "butler: error: ZeroDivisionError: division by zero (--debug shows the traceback)\n"
    )


def test_debug_raises_the_exception(cli: Cli, tmp_path: Path) -> None:
    result = cli("--debug", "ls", tmp_path / "none")
    assert result.exit_code == 1
    assert isinstance(result.exception, butler.StorageError)
    assert "no butler repository" in str(result.exception)


def test_usage_errors_are_clicks(cli: Cli) -> None:
    result = cli("get", "./repo", "img")
    assert result.exit_code == 2
    assert "Missing option '-o' / '--output'" in result.stderr


COMMANDS = sorted(main.commands)


def test_commands_are_all_covered() -> None:
    assert (
        sorted(
            [
                "chain",
                "convert",
                "define",
                "get",
                "history",
                "info",
                "init",
                "ls",
                "plugins",
                "provenance",
                "purge",
                "put",
                "reindex",
                "rm",
                "rm-run",
                "runs",
                "verify",
            ]
        )
        == COMMANDS
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_an_example(cli: Cli, command: str) -> None:
    result = cli(command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout
    assert f"  butler {command} " in result.stdout or f"  butler {command}\n" in result.stdout


def test_main_help(cli: Cli) -> None:
    result = cli("-h")
    assert result.exit_code == 0
    assert "Examples:" in result.stdout and "--json" in result.stdout
    for command in COMMANDS:
        assert f"  {command} " in result.stdout


@pytest.mark.parametrize(
    ("given", "expected"),
    [("2", 2), (" 3 ", 3), ("SCI", "SCI"), ("\u00b2", "\u00b2"), ("\u0661", "\u0661")],
)
def test_hdu_number_is_ascii_digits_only(given: str, expected: object) -> None:
    """``str.isdigit()`` takes '\u00b2' (then ``int()`` raised a traceback) and
    '\u0661' (read as HDU 1): only ASCII digits make an HDU index."""
    from butler._cli_files import hdu_option

    assert hdu_option(given) == expected


@pytest.mark.parametrize(
    ("given", "expected"), [("3", 3), ("-4", -4), ("\u0661", "\u0661"), ("true", True)]
)
def test_storage_option_integers_are_ascii_digits_only(given: str, expected: object) -> None:
    from butler._cli import _scalar

    assert _scalar(given) == expected
