"""``--help`` text laid out the way argparse lays it out, so that it reads well at 80 columns.

Each option shows its first long name with a short placeholder (``--quant-policy {0,4,8}``,
``--api-keys TEXT [TEXT ...]``, none for on/off flags), its help wrapped at word boundaries
(never inside a flag name), its default, and the other names it answers to. Options are grouped
under their ``rich_help_panel`` title, in the order they are declared.
"""

from __future__ import annotations

import inspect
import shutil
import textwrap
from enum import Enum
from typing import Any

MAX_WIDTH = 100
NAME_COLUMN = 26  # a longer option name puts its help on the next line, as argparse does
_KINDS = {int: "INT", float: "FLOAT", str: "TEXT", bool: "BOOL"}


def help_width() -> int:
    """The terminal's width (``COLUMNS`` when set), at most :data:`MAX_WIDTH`."""
    return max(40, min(shutil.get_terminal_size((80, 24)).columns, MAX_WIDTH))


def _wrap(text: str, width: int, indent: str = "") -> list[str]:
    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent,
                         break_on_hyphens=False, break_long_words=False) or [indent.rstrip()]


def _paragraphs(text: str) -> list[str]:
    """Paragraphs of a docstring, each on one line."""
    text = inspect.cleandoc(text or "").partition("\f")[0]
    return [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]


def first_sentence(text: str) -> str:
    """The first sentence of a help text (what a command list shows)."""
    first = _paragraphs(text)[0] if _paragraphs(text) else ""
    head, dot, _ = first.partition(". ")
    return head + ("." if dot else "")


def _annotation(param: Any) -> Any:
    descriptor = getattr(param, "type_descriptor", None)  # typer >= 0.2x
    return getattr(descriptor, "annotation", None)


def choices(param: Any) -> list[str] | None:
    """The values a parameter accepts, when it lists them."""
    descriptor = getattr(param, "type_descriptor", None)
    values = getattr(descriptor, "choices", None) or getattr(getattr(param, "type", None),
                                                              "choices", None)
    if not values:
        return None
    return [v.value if isinstance(v, Enum) else str(v) for v in values]


def value_kind(param: Any) -> type | None:
    """The Python type of one value of ``param`` (``int`` for ``list[int]``), when known."""
    annotation = _annotation(param)
    args = getattr(annotation, "__args__", None)
    if args:
        annotation = args[0]
    if isinstance(annotation, type):
        return annotation
    name = getattr(getattr(param, "type", None), "name", "")
    return {"integer": int, "float": float, "text": str, "boolean": bool}.get(name)


def _case_sensitive(param: Any) -> bool:
    info = getattr(getattr(param, "type_descriptor", None), "parameter_info", None)
    flag = getattr(info, "case_sensitive", getattr(getattr(param, "type", None),
                                                   "case_sensitive", True))
    return flag is not False


def placeholder(param: Any) -> str:
    """What stands for an option's value: ``{0,4,8}``, ``INT``, ``TEXT [TEXT ...]`` or nothing."""
    if getattr(param, "is_flag", False):
        return ""
    if param.metavar:
        one = param.metavar
    elif choices(param):
        values = choices(param)
        if not _case_sensitive(param):  # shown as typed: --log-level {info,...}
            values = list(dict.fromkeys(v.lower() for v in values))
        one = "{" + ",".join(values) + "}"
    else:
        kind = value_kind(param)
        one = "PATH" if kind is not None and kind.__name__.endswith("Path") else _KINDS.get(
            kind, "TEXT")
    return f"{one} [{one} ...]" if param.multiple else one


def _default(param: Any) -> str:
    if param.show_default is False or getattr(param, "is_flag", False) or param.multiple:
        return ""
    if isinstance(param.show_default, str):
        return param.show_default
    value = param.default
    if value is None or value == "" or callable(value):
        return ""
    text = str(value.value if isinstance(value, Enum) else value)
    return text.lower() if choices(param) and not _case_sensitive(param) else text


def _option_help(param: Any) -> str:
    text = " ".join((param.help or "").split())
    others = [o for o in [*param.opts, *param.secondary_opts] if o.startswith("--")][1:]
    if others:
        text += f" Also {', '.join(others)}."
    default = _default(param)
    if default:
        text += f" [default: {default}]"
    return text.strip()


def _option_name(param: Any) -> str:
    names = [*param.opts, *param.secondary_opts]
    long = next((o for o in names if o.startswith("--")), names[0])
    short = [o for o in names if not o.startswith("--")]
    name = ", ".join([*short, long])
    value = placeholder(param)
    return f"{name} {value}" if value else name


def _column(sections: list[list[tuple[str, str]]]) -> int:
    """Where help texts start: after the longest name that fits :data:`NAME_COLUMN`."""
    names = [len(name) for rows in sections for name, _ in rows if len(name) <= NAME_COLUMN]
    return max(names, default=NAME_COLUMN) + 4


def _rows(rows: list[tuple[str, str]], width: int, column: int) -> list[str]:
    lines: list[str] = []
    for name, text in rows:
        # "[default: X]" stays on one line: its space is a no-break space while wrapping.
        text = text.replace("[default: ", "[default:\u00a0")
        wrapped = [line.replace("\u00a0", " ") for line in _wrap(text, width - column)]
        if len(name) + 4 > column:
            lines.append(f"  {name}")
            lines += [" " * column + line for line in wrapped if line]
        else:
            lines.append(f"  {name:<{column - 2}}{wrapped[0]}".rstrip())
            lines += [" " * column + line for line in wrapped[1:]]
    return lines


def _section(title: str, rows: list[tuple[str, str]], width: int, column: int) -> list[str]:
    return ["", f"{title}:", *_rows(rows, width, column)] if rows else []


def _intro(command: Any, usage: str, width: int) -> list[str]:
    lines = [f"Usage: {usage}"]
    for paragraph in _paragraphs(command.help or ""):
        lines += ["", *_wrap(paragraph, width, "  ")]
    return lines


def _option_sections(command: Any, ctx: Any, width: int) -> list[str]:
    arguments, panels = [], {"Options": []}
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        if param.param_type_name == "argument":
            arguments.append((param.name.upper(), " ".join((param.help or "").split())))
            continue
        panel = getattr(param, "rich_help_panel", None) or "Options"
        panels.setdefault(panel, []).append((_option_name(param), _option_help(param)))
    column = _column([arguments, *panels.values()])
    lines = _section("Arguments", arguments, width, column)
    for title, rows in panels.items():
        lines += _section(title if title == "Options" else f"{title} options", rows, width,
                          column)
    return lines


def format_command_help(command: Any, ctx: Any) -> str:
    """The help of a command: usage, description, arguments, then options by panel."""
    width = help_width()
    pieces = [ctx.command_path, "[OPTIONS]"]
    for param in command.get_params(ctx):
        if param.param_type_name == "argument":
            name = param.name.upper() + ("..." if param.nargs != 1 else "")
            pieces.append(name if param.required else f"[{name}]")
    lines = _intro(command, " ".join(pieces), width) + _option_sections(command, ctx, width)
    return "\n".join(lines) + "\n"


def format_group_help(group: Any, ctx: Any) -> str:
    """The help of a command group: usage, description, options, then its commands."""
    width = help_width()
    lines = _intro(group, f"{ctx.command_path} [OPTIONS] COMMAND [ARGS]...", width)
    lines += _option_sections(group, ctx, width)
    commands = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is not None and not getattr(command, "hidden", False):
            commands.append((name, first_sentence(command.help or "")))
    lines += _section("Commands", commands, width, _column([commands]))
    lines += ["", f"Run '{ctx.command_path} COMMAND --help' for a command's options."]
    return "\n".join(lines) + "\n"
