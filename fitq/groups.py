"""The click group every ``fitq`` command group is, and help kept as it is written."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import click
from typing_extensions import override


def verbatim(text: str) -> str:
    """``text`` as click help: the first paragraph wrapped, the others kept as written."""
    first, *rest = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join([first, *(f"\b\n{paragraph}" for paragraph in rest)])


class Declared(click.Group):
    """A group whose help lists its commands in the order they were declared.

    A command declared with ``add_lazy`` is imported only when it is used or listed,
    so that ``fitq worker`` never loads what ``fitq submit`` needs, and the other way
    round. Without a command, the group is a usage error (exit 2), whatever click's
    version.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("no_args_is_help", False)
        self.order: list[str] = []
        self.lazy: dict[str, str] = {}
        super().__init__(*args, **kwargs)
        self.order += [name for name in self.commands if name not in self.order]

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        super().add_command(cmd, name)
        name = name or cmd.name
        if name is not None and name not in self.order:
            self.order.append(name)

    def add_lazy(self, name: str, target: str) -> None:
        """Declares the command ``name``, the object at ``target`` ("module:attribute")."""
        self.lazy[name] = target
        self.order.append(name)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module, _, attribute = self.lazy[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self.lazy[cmd_name]} is {command!r}, not a click command")
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    @override
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.order)
