"""Query mode: code runs in one persistent namespace, in the runner's main thread, so an
``interrupt`` (SIGINT) lands in the user's code as ``KeyboardInterrupt`` and the runner
survives it. Like a Jupyter cell: the value of a trailing expression is displayed, an
exception goes to stderr and the run still finishes with exit code 0; top-level ``await``
works."""

from __future__ import annotations

import ast
import builtins
import getpass
import inspect
import sys
import traceback
import types
from typing import Any

from .console import ConsoleStream, UserInput, rich_record
from .outbox import Outbox

_FLAGS = getattr(ast, "PyCF_ALLOW_TOP_LEVEL_AWAIT", 0)


class QueryEngine:
    def __init__(self, outbox: Outbox, enabled: bool = True) -> None:
        self.enabled = enabled
        self.outbox = outbox
        self.stdout = ConsoleStream(outbox, "stdout")
        self.stderr = ConsoleStream(outbox, "stderr")
        self.user_input = UserInput(outbox, self.stdout)
        self.namespace: dict[str, Any] = {
            "__name__": "__main__",
            "__builtins__": builtins,
            "display": self.display,
        }
        self.executing = False
        """Whether user code runs now (SIGINT interrupts it only then)."""
        self._loop: Any = None
        """The event loop of top-level ``await`` (asyncio is imported with the first one: a
        kernel's start waits on the runner's imports)."""
        self.count = 0

    def install(self) -> None:
        """Route the process's console and prompts to the agent (for code and its threads)."""
        sys.stdout = self.stdout
        sys.stderr = self.stderr
        builtins.input = self.user_input.input
        getpass.getpass = self.user_input.getpass

    def run(self, code: str) -> int:
        """Execute one query; the ``finished`` exit code (127 when query mode is off)."""
        if not self.enabled:
            return 127
        self.count += 1
        filename = "<input-" + str(self.count) + ">"
        try:
            tree = ast.parse(code, filename, "exec")
            tail = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                tail = ast.Expression(tree.body.pop().value)  # type: ignore[attr-defined]
            body = compile(tree, filename, "exec", flags=_FLAGS)
            last = compile(tail, filename, "eval", flags=_FLAGS) if tail is not None else None
        except (SyntaxError, ValueError, OverflowError):
            self._print_exception(skip=0)
            return 0
        self.executing = True
        try:
            self._evaluate(body)
            if last is not None:
                value = self._evaluate(last)
                if value is not None:
                    self.namespace["_"] = value
                    self.display(value)
        except BaseException as exc:
            if isinstance(exc, SystemExit) and getattr(exc, "_kh_shutdown", False):
                raise
            self._print_exception(skip=2)
        finally:
            self.executing = False
        return 0

    def _evaluate(self, code: types.CodeType) -> Any:
        result = eval(code, self.namespace)
        if inspect.iscoroutine(result) and code.co_flags & inspect.CO_COROUTINE:
            if self._loop is None:
                import asyncio

                self._loop = asyncio.new_event_loop()
            result = self._loop.run_until_complete(result)
        return result

    def display(self, value: Any) -> None:
        rich = rich_record(value)
        if rich is not None:
            self.outbox.send(*rich)
        else:
            self.stdout.write(repr(value) + "\n")

    def _print_exception(self, skip: int) -> None:
        """The traceback without the runner's own frames."""
        kind, value, tb = sys.exc_info()
        for _ in range(skip):
            if tb is not None and tb.tb_frame.f_code.co_filename == __file__:
                tb = tb.tb_next
        self.stderr.write("".join(traceback.format_exception(kind, value, tb)))
