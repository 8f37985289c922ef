"""Ward's SDK for task actions written in Python (componentize-py).

An action is one function; the decorator makes it the component's `run`::

    from ward_sdk import action, Context, InvalidInput, WitWorld  # noqa: F401

    @action
    def hello(ctx: Context, input: dict) -> dict:
        name = input.get("name", "world").strip()
        if not name:
            raise InvalidInput("name must not be empty")
        with ctx.timer("greet"):
            ctx.info(f"greeting {name}")
            ctx.counter("greetings")
            ctx.output("message", f"Hello, {name}!")
        return {"message": f"Hello, {name}!"}

Importing `WitWorld` into the app module is what exports `run` (componentize-py
looks it up there). The input is the parsed JSON, or an instance of the
function's annotated dataclass; the result is any JSON value or a dataclass.
Raise `Retryable`, `Fatal` or `InvalidInput` to say how the attempt failed;
any other exception is `Retryable`, with its traceback in the message.
Python's `logging` goes to the host log.
"""

import dataclasses
import json
import logging
import time
import traceback
import typing
from typing import Any, Callable, Iterable, Optional, Tuple

from componentize_py_types import Err
from wit_world.imports import host
from wit_world.imports.types import (
    ActionError_Fatal,
    ActionError_InvalidInput,
    ActionError_Retryable,
    Invocation,
    Level,
)

__all__ = [
    "action",
    "Context",
    "ActionFailed",
    "Retryable",
    "Fatal",
    "InvalidInput",
    "MediaRef",
    "WitWorld",
]


class ActionFailed(Exception):
    """How an action failed; the subclass decides whether Ward tries again."""


class Retryable(ActionFailed):
    """A transient failure: another attempt runs under the task's retry policy."""


class Fatal(ActionFailed):
    """A permanent failure: the task run ends without further attempts."""


class InvalidInput(ActionFailed):
    """The input cannot be processed: the task run ends without further attempts."""


@dataclasses.dataclass(frozen=True)
class MediaRef:
    """A stored media object: its id and where it can be fetched."""

    id: str
    url: str


Tags = Optional[Iterable[Tuple[str, str]]]


def _tags(tags: Any) -> list:
    if not tags:
        return []
    if isinstance(tags, dict):
        tags = tags.items()
    return [(str(k), str(v)) for k, v in tags]


def _json(value: Any) -> str:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _host_error(e: Err) -> Fatal:
    return Fatal(str(e.value))


class _Timer:
    def __init__(self, name: str, tags: Tags):
        self.name = name
        self.tags = _tags(tags)
        self.start = 0

    def __enter__(self) -> "_Timer":
        self.start = time.monotonic_ns()
        return self

    def __exit__(self, *exc: Any) -> None:
        host.duration(self.name, max(time.monotonic_ns() - self.start, 0), self.tags)

    def tag(self, key: str, value: str) -> "_Timer":
        self.tags.append((key, value))
        return self


class Context:
    """What an attempt knows of itself, and the host's calls."""

    def __init__(self, invocation: Invocation):
        self.execution_id: str = invocation.execution_id
        self.task_id: str = invocation.task_id
        self.step: str = invocation.step
        self.attempt: int = invocation.attempt

    # Logs.
    def log(self, level: Level, message: str) -> None:
        host.log(level, str(message))

    def trace(self, message: str) -> None:
        host.log(Level.TRACE, str(message))

    def debug(self, message: str) -> None:
        host.log(Level.DEBUG, str(message))

    def info(self, message: str) -> None:
        host.log(Level.INFO, str(message))

    def error(self, message: str) -> None:
        host.log(Level.ERROR, str(message))

    def warn(self, message: str) -> None:
        """Records a warning: the attempt ends WARNING if it succeeds."""
        host.warn(str(message))

    # Outputs and metrics.
    def output(self, name: str, value: Any) -> None:
        """Sets output `name` to `value` (JSON); `Fatal` past the quota."""
        try:
            host.set_output(name, _json(value))
        except Err as e:
            raise _host_error(e) from None

    def counter(self, name: str, delta: int = 1, tags: Tags = None) -> None:
        host.counter(name, int(delta), _tags(tags))

    def duration(self, name: str, seconds: float, tags: Tags = None) -> None:
        host.duration(name, max(int(seconds * 1e9), 0), _tags(tags))

    def timer(self, name: str, tags: Tags = None) -> _Timer:
        """A context manager that records a duration metric as it exits."""
        return _Timer(name, tags)

    # Media, checkpoints, variables.
    def media(self, name: str, content_type: str, data: bytes) -> MediaRef:
        if isinstance(data, str):
            data = data.encode()
        try:
            r = host.put_media(name, content_type, bytes(data))
        except Err as e:
            raise _host_error(e) from None
        return MediaRef(id=r.id, url=r.url)

    def checkpoint(self, state: Any) -> None:
        try:
            host.checkpoint(_json(state))
        except Err as e:
            raise _host_error(e) from None

    def last_checkpoint(self) -> Any:
        text = host.last_checkpoint()
        return None if text is None else json.loads(text)

    def variable(self, name: str) -> Optional[str]:
        return host.get_variable(name)


class _HostLog(logging.Handler):
    LEVELS = [
        (logging.ERROR, Level.ERROR),
        (logging.WARNING, Level.WARN),
        (logging.INFO, Level.INFO),
        (logging.DEBUG, Level.DEBUG),
    ]

    def emit(self, record: logging.LogRecord) -> None:
        level = next((lv for n, lv in self.LEVELS if record.levelno >= n), Level.TRACE)
        try:
            host.log(level, self.format(record))
        except Exception:  # a log line must never fail the attempt
            pass


_ACTION: Optional[Callable[..., Any]] = None


def action(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Makes `fn(ctx, input)` the component's `run` (one per component)."""
    global _ACTION
    _ACTION = fn
    return fn


def _input_type(fn: Callable[..., Any]) -> Any:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return None
    params = [p for p in fn.__code__.co_varnames[: fn.__code__.co_argcount]]
    if len(params) < 2:
        return None
    t = hints.get(params[1])
    return t if dataclasses.is_dataclass(t) else None


def _parse(fn: Callable[..., Any], text: str) -> Any:
    try:
        value = json.loads(text) if text.strip() else None
    except ValueError as e:
        raise InvalidInput(f"input is not JSON: {e}") from None
    t = _input_type(fn)
    if t is None:
        return value
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise InvalidInput(f"input must be an object for {t.__name__}")
    known = {f.name for f in dataclasses.fields(t)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise InvalidInput(f"unknown input fields: {', '.join(unknown)}")
    try:
        return t(**value)
    except TypeError as e:
        raise InvalidInput(f"input does not match {t.__name__}: {e}") from None


def _run(invocation: Invocation) -> str:
    if _ACTION is None:
        raise Err(ActionError_Fatal("no function is decorated with @ward_sdk.action"))
    root = logging.getLogger()
    if not any(isinstance(h, _HostLog) for h in root.handlers):
        root.addHandler(_HostLog())
        root.setLevel(logging.INFO)
    try:
        input = _parse(_ACTION, invocation.input)
        result = _ACTION(Context(invocation), input)
    except Retryable as e:
        raise Err(ActionError_Retryable(str(e))) from None
    except Fatal as e:
        raise Err(ActionError_Fatal(str(e))) from None
    except InvalidInput as e:
        raise Err(ActionError_InvalidInput(str(e))) from None
    except Err:
        raise
    except Exception:
        # Anything else may be transient: retried, with where it happened.
        raise Err(ActionError_Retryable(traceback.format_exc(limit=20))) from None
    try:
        return _json(result)
    except (TypeError, ValueError) as e:
        raise Err(ActionError_Fatal(f"result does not serialize to JSON: {e}")) from None


class WitWorld:
    """The component's export: import it into the app module."""

    def run(self, invocation: Invocation) -> str:
        return _run(invocation)
