"""One error type for bad input, printed as a single line by the command wrapper.

Format: ``error: <where>[:<line>[:<col>]]: <problem>; <hint>`` where ``where`` is a file path
or a config key.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar


@dataclass
class CrossrecError(Exception):
    """Bad input (file, config key or checkpoint) that stops a command with exit code 2."""

    exit_code: ClassVar[int] = 2
    where: str
    problem: str
    hint: str = ""
    line: int | None = None
    col: int | None = None

    def __post_init__(self) -> None:
        super().__init__(self.one_line())

    def one_line(self) -> str:
        loc = str(self.where)
        if self.line is not None:
            loc += f":{self.line}"
            if self.col is not None:
                loc += f":{self.col}"
        text = f"error: {loc}: {self.problem}"
        if self.hint:
            text += f"; {self.hint}"
        return " ".join(text.split())  # exactly one line, whatever the inputs held

    def __str__(self) -> str:
        return self.one_line()


class IOFault(CrossrecError):
    """A file or folder that could not be written (no space, no permission, read-only, quota):
    exit code 74 (EX_IOERR), so a scheduler can tell it from bad input."""

    exit_code: ClassVar[int] = 74


class Interrupted(CrossrecError):
    """Ctrl-C outside a checkpointed training step, or a second one inside it: exit code 130."""

    exit_code: ClassVar[int] = 130


def either(names: Iterable[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``: the allowed values of a key, for an error's hint."""
    *rest, last = list(names)
    return f"{', '.join(rest)} or {last}" if rest else last
