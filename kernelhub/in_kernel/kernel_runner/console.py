"""User code's ``sys.stdout``/``sys.stderr``, ``input()`` and rich display, as records."""

from __future__ import annotations

import base64
import io
import json
import queue
from typing import Any, Callable

from .outbox import MAX_RECORD, Outbox

__all__ = ["MAX_RECORD", "ConsoleStream", "UserInput", "rich_record"]


class ConsoleStream(io.TextIOBase):
    """A text stream whose writes become ``stdout``/``stderr`` records at once."""

    def __init__(self, outbox: Outbox, name: str) -> None:
        super().__init__()
        self._outbox = outbox
        self._name = name

    @property
    def name(self) -> str:
        return "<" + self._name + ">"

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError("write() argument must be str, not " + type(text).__name__)
        if text:
            data = text.encode("utf-8", "replace")[:MAX_RECORD]
            self._outbox.send(self._name, data)
        return len(text)


class UserInput:
    """``input()`` and ``getpass()`` for query-mode code: the prompt goes out as stdout,
    then ``waiting-input``; the reply comes back through the ``input`` op."""

    def __init__(self, outbox: Outbox, stdout: ConsoleStream) -> None:
        self._outbox = outbox
        self._stdout = stdout
        self._replies: queue.Queue[str] = queue.Queue()

    def provide(self, text: str) -> None:
        self._replies.put(text)

    def _ask(self, prompt: Any, is_password: bool) -> str:
        while True:  # a reply left over from an interrupted prompt is not this one's
            try:
                self._replies.get_nowait()
            except queue.Empty:
                break
        if prompt:
            self._stdout.write(str(prompt))
        self._outbox.send("waiting-input", json.dumps({"is_password": is_password}))
        return self._replies.get()

    def input(self, prompt: Any = "") -> str:
        return self._ask(prompt, False)

    def getpass(self, prompt: Any = "Password: ", stream: Any = None) -> str:
        return self._ask(prompt, True)


def rich_record(value: Any) -> tuple[str, str] | None:
    """The record that displays ``value``: html, then images, else None (plain ``repr``).
    HTML goes out as an ``html`` record, not as ``media`` (the spec's quirk: the agent
    could not parse the latter)."""
    html = _call(value, "_repr_html_")
    if isinstance(html, str):
        return "html", html
    for mime, method in (("image/png", "_repr_png_"), ("image/jpeg", "_repr_jpeg_")):
        data = _call(value, method)
        if isinstance(data, (bytes, str)):
            raw = data if isinstance(data, bytes) else base64.b64decode(data)
            uri = "data:" + mime + ";base64," + base64.b64encode(raw).decode("ascii")
            return "media", json.dumps({"type": mime, "data": uri})
    svg = _call(value, "_repr_svg_")
    if isinstance(svg, str):
        return "media", json.dumps({"type": "image/svg+xml", "data": svg})
    return None


def _call(value: Any, method: str) -> Any:
    function: Callable[[], Any] | None = getattr(value, method, None)
    if function is None or isinstance(value, type):
        return None
    try:
        return function()
    except Exception:
        return None
