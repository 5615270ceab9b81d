"""The command classes behind every lmforge command: readable help and LMDeploy's value lists.

``LmforgeCommand`` lays its help out with :mod:`.help_format` and reads an option that takes
several values the way LMDeploy's argparse does: ``--api-keys k1 k2`` and ``--batch-size 1 16
64`` are lists, not one value followed by stray arguments. ``HelpGroup`` lays out a group's
help; ``DefaultCommandGroup`` also runs one of its commands when the first argument names no
command (``lmforge serve MODEL`` is ``lmforge serve api_server MODEL``).
"""

from __future__ import annotations

from difflib import get_close_matches
from pathlib import Path
from typing import Any

from typer.core import TyperCommand, TyperGroup

from ..model.hub import is_hub_id
from .help_format import format_command_help, format_group_help, value_kind


def _converts(kind: type, token: str) -> bool:
    try:
        kind(token)
    except ValueError:
        return False
    return True


def _is_more_value(param: Any, token: str) -> bool:
    """Whether ``token``, after a list option's first value, is one more of its values."""
    kind = value_kind(param)
    if kind in (int, float):
        return _converts(kind, token)
    if token.startswith("-"):
        return False
    # A model path or Hub id after the list is the command's argument, not a list item.
    return not (Path(token).expanduser().exists() or is_hub_id(token))


def expand_lists(params: list[Any], args: list[str]) -> list[str]:
    """``args`` with every space-separated list spelled out: ``--api-keys a b`` becomes
    ``--api-keys a --api-keys b``."""
    lists = {name: p for p in params if p.param_type_name == "option" and p.multiple
             for name in [*p.opts, *p.secondary_opts]}
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        out.append(arg)
        i += 1
        if arg == "--":
            return out + args[i:]
        param = lists.get(arg)
        if param is None or i == len(args):
            continue
        out.append(args[i])  # the first value is taken as it is, as click does
        i += 1
        while i < len(args) and _is_more_value(param, args[i]):
            out += [arg, args[i]]
            i += 1
    return out


class LmforgeCommand(TyperCommand):
    """A command with argparse-style help and space-separated option lists."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, expand_lists(self.get_params(ctx), args))

    def format_help(self, ctx: Any, formatter: Any) -> None:
        formatter.write(format_command_help(self, ctx))


class HelpGroup(TyperGroup):
    """A command group with argparse-style help."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        formatter.write(format_group_help(self, ctx))


class DefaultCommandGroup(HelpGroup):
    """A group that runs :attr:`default_command` when the first argument names none of its
    commands, nor comes close to one (a typo still gets "did you mean")."""

    default_command = ""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and self._is_default_form(ctx, args[0]):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)

    def _is_default_form(self, ctx: Any, first: str) -> bool:
        if first in self.commands or first in ctx.help_option_names:
            return False
        return first.startswith("-") or not get_close_matches(first, list(self.commands))
