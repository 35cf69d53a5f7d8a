"""One-line errors for `robot-rl`: tyro's parse failures and OS errors, reworded.

The README promises that a command line the CLI refuses costs the user one line
(``robot-rl: error: ...``, exit 2), never a traceback or a framed box. tyro draws a box of 5-15
lines for every parse failure; :func:`parse` intercepts each failure through tyro's parse-error
hook (``tyro._errors.on_parse_error``: private, but tyro is pinned in pyproject.toml) and raises
:class:`UsageError` with a one-line message instead. Should a failure reach tyro's printing anyway
(a new kind of event in a later tyro), its box is captured and folded into one line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import errno
import io
import os
import re
import sys
import typing
from collections.abc import Sequence
from typing import Any

import tyro

try:  # tyro's parse-error hook: private and unstable (tyro is pinned); without it, its boxes are folded below
    from tyro import _errors as tyro_errors
except ImportError:  # pragma: no cover
    tyro_errors = None

PROG = "robot-rl"

_POSITIONAL = typing.get_args(tyro.conf.Positional[int])[1]


class UsageError(Exception):
    """A command line that `robot-rl` refuses; printed as one line, exit 2."""


def one_line(text: str) -> str:
    """``text`` with its lines joined: an error is one line on the terminal."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def describe_os_error(err: OSError) -> str:
    """One line for an OS error: the path and what happened (``permission denied``, ``is a directory``...)."""
    what = err.strerror or ""
    path = err.filename
    if path is None:
        # h5py folds the path and the reason into its message: "... name = 'x.hdf5', errno = 13, error message =
        # 'Permission denied' ...".
        found = re.search(r"name = '([^']*)'.*error message = '([^']*)'", str(err))
        if found is None:
            return one_line(re.sub(r"^\[Errno \d+\] ", "", str(err)))
        path, what = found.groups()
    if not what:
        return one_line(str(err))
    where = os.fsdecode(path)
    if err.filename2 is not None:
        where += f" -> {os.fsdecode(err.filename2)}"
    hint = {
        errno.EACCES: "; check its permissions or choose another path",
        errno.EPERM: "; check its permissions or choose another path",
        errno.EROFS: "; choose a path on a writable file system",
        errno.ENOSPC: "; free some space or choose another disk",
        errno.EISDIR: "; give a file path, not a folder",
        errno.ENOTDIR: "; a part of the path is a file, not a folder",
    }.get(err.errno, "")
    return f"{where}: {what[:1].lower()}{what[1:]}{hint}"


def command_tree(command_type: Any) -> dict[str, Any]:
    """Subcommand names of a tyro union (``Annotated[X, tyro.conf.subcommand(name)] | ...``), nested as dicts.

    Leaves are the dataclasses; groups (``data``, ``train``, ``monitor``) are dicts of their subcommands.
    """
    tree: dict[str, Any] = {}
    for member in typing.get_args(command_type):
        inner, *extras = typing.get_args(member)
        name = next(getattr(e, "name", None) for e in extras if getattr(e, "name", None))
        tree[name] = command_tree(inner) if typing.get_args(inner) else inner
    return tree


def _selected(tree: dict[str, Any], argv: Sequence[str]) -> tuple[list[str], Any]:
    """The subcommand path the command line chose (``["data", "info"]``) and what it leads to."""
    path: list[str] = []
    node: Any = tree
    for token in argv:
        if not isinstance(node, dict):
            break
        if token in node:
            path.append(token)
            node = node[token]
    return path, node


def _flags(cls: Any, prefix: str = "") -> list[str]:
    """The options of a dataclass as tyro spells them (``--episodes``, ``--no-progress``, ``--policy.horizon``)."""
    if not dataclasses.is_dataclass(cls):
        return []
    hints = typing.get_type_hints(cls, include_extras=True)
    flags = []
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if _POSITIONAL in typing.get_args(hint)[1:]:
            continue
        name = prefix + field.name.replace("_", "-")
        if dataclasses.is_dataclass(hint):
            flags += _flags(hint, name + ".")
            continue
        flags.append(f"--{name}")
        if hint is bool:
            flags.append(f"--{prefix}no-{field.name.replace('_', '-')}")
    return flags


def _given(argv: Sequence[str], flags: Sequence[str]) -> str | None:
    """The value the command line gave one of ``flags``."""
    for i, token in enumerate(argv):
        for flag in flags:
            if token == flag and i + 1 < len(argv):
                return argv[i + 1]
            if token.startswith(flag + "="):
                return token[len(flag) + 1 :]
    return None


_KINDS = {
    "INT": ("an integer", "integers"),
    "FLOAT": ("a number", "numbers"),
    "PATH": ("a path", "paths"),
    "STR": ("a string", "strings"),
}
"""tyro's metavars, as the message words them (one value, several)."""


def _bad_value(event: tyro_errors.InstantiationFailure, argv: Sequence[str]) -> str:
    """``--episodes expects an integer, got 'abc'``."""
    arg = event.argument
    assert arg is not None
    name = arg.display_name()
    metavar = str(arg.lowered.metavar or "")
    one, many = next((words for key, words in _KINDS.items() if key in metavar), ("another value", "other values"))
    expected = f"one or more {many}" if "..." in metavar else one
    if metavar.startswith("{None}|"):
        expected += " (or None)"
    got = re.search(r": '(.*)'$", event.message.splitlines()[-1])
    value = got.group(1) if got else _given(argv, arg.lowered.name_or_flags if not arg.is_positional() else ())
    if value is None:
        return f"{name}: {one_line(event.message)}"
    return f"{name} expects {expected}, got {value!r}"


def _where(path: list[str]) -> str:
    command = " ".join([PROG, *path])
    return f"`{command}`; see `{command} --help`"


def _message(
    event: tyro_errors.ParseErrorEvent,
    argv: Sequence[str],
    tree: dict[str, Any] | type,
    prefix: Sequence[str] = (),
) -> str | None:
    """One line for a tyro parse failure, or None for an event this CLI does not know (tyro's box is folded).

    ``tree`` is a command tree, or one options dataclass parsed under the verbs ``prefix`` (``robot-rl bench envs``).
    """
    path, node = _selected(tree, argv) if isinstance(tree, dict) else ([], tree)
    path = [*prefix, *path]
    if isinstance(event, tyro_errors.InstantiationFailure):
        if event.argument is not None:
            return _bad_value(event, argv)
        return one_line(event.message)
    if isinstance(event, tyro_errors.UnrecognizedArgs):
        token = next((t for t in event.tokens if t.startswith("-")), event.tokens[0] if event.tokens else "")
        if isinstance(node, dict) and not token.startswith("-"):
            close = difflib.get_close_matches(token, list(node), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            command = " ".join([PROG, *path])
            return f"unknown command {token!r} for `{command}`; choose one of {', '.join(node)}.{hint}"
        if not token.startswith("-"):
            return f"unexpected argument {token!r} for {_where(path)}"
        flag = token.split("=", 1)[0]
        close = difflib.get_close_matches(flag, [] if isinstance(node, dict) else _flags(node), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"unknown option {flag}{hint} for {_where(path)}"
    if isinstance(event, tyro_errors.MissingSubcommand):
        names = ", ".join(event.subcommand_spec.parser_from_name)
        return f"`{' '.join([PROG, *path])}` needs a command: one of {names}; see `{' '.join([PROG, *path])} --help`"
    if isinstance(event, tyro_errors.MissingArgs):
        names = " and ".join(
            a.arg.display_name().upper() if a.arg.is_positional() else a.arg.lowered.name_or_flags[0]
            for a in event.missing_arguments
        )
        return f"missing {names} for {_where(path)}"
    if isinstance(event, tyro_errors.InvalidChoice):
        name = event.argument.display_name()
        if event.argument.is_positional():
            name = f"`{' '.join([PROG, *path])}`"
        close = difflib.get_close_matches(event.value, list(event.choices), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"{name} expects one of {', '.join(event.choices)}; got {event.value!r}.{hint}"
    if isinstance(event, tyro_errors.BadValue):
        name = event.argument.display_name()
        if event.reason == "too_few_values":
            return f"{name} needs a value; see `{' '.join([PROG, *path])} --help`"
        return f"{name} takes no value; got {event.offending_value!r}"
    if isinstance(event, tyro_errors.MutexConflict):
        return f"{event.first_token} and {event.second_token} cannot be given together"
    return None


def _fold_box(text: str) -> str:
    """The first paragraph of one of tyro's framed messages, as one line."""
    lines = [line.strip().strip("│╭╮╰╯").strip() for line in text.splitlines()]
    body: list[str] = []
    for line in lines[1:]:
        if not line.strip("─ "):
            if body:
                break
            continue
        body.append(line)
    return one_line(" ".join(body)) or "invalid command line; see `robot-rl --help`"


def parse(command_type: Any, argv: Sequence[str] | None, description: str, prefix: Sequence[str] = ()) -> Any:
    """``tyro.cli(command_type)`` whose refusals raise :class:`UsageError` (one line) instead of printing a box.

    ``command_type`` is the union of verbs, or one options dataclass read after the verbs ``prefix`` (``bench envs``:
    the messages and ``--help`` then say ``robot-rl bench envs``). ``--help`` prints and exits as tyro does.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    tree = command_tree(command_type) if typing.get_args(command_type) else command_type

    def hook(event: tyro_errors.ParseErrorEvent) -> None:
        message = _message(event, args, tree, prefix)
        if message is not None:
            raise UsageError(message)

    captured = io.StringIO()
    try:
        hooked = tyro_errors.on_parse_error(hook) if tyro_errors is not None else contextlib.nullcontext()
        with hooked, contextlib.redirect_stderr(captured):
            command = tyro.cli(command_type, args=args, prog=" ".join([PROG, *prefix]), description=description)
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise UsageError(_fold_box(captured.getvalue())) from None
        sys.stderr.write(captured.getvalue())
        raise
    sys.stderr.write(captured.getvalue())  # warnings, if any
    return command
