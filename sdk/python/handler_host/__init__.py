"""Write Handler Host plugins in Python.

A plugin subclasses :class:`Plugin`, declares what it handles, implements the handlers it
needs, and exports itself with :func:`export`::

    import handler_host as hh

    class Greeter(hh.Plugin):
        name = "greeter"
        version = "0.1.0"
        commands = ["greeter.greet"]

        def handle_command(self, msg):
            who = msg.payload()["name"]
            if not who:
                raise hh.Rejected("name must not be empty")
            hh.state.put(f"greeted/{who}", True)
            hh.events.emit("greeter.greeted", {"name": who}, partition_key=who)
            return {"greeting": f"Hello, {who}!"}

    WitWorld = hh.export(Greeter)

Payloads, state values and replies are JSON. Raise :class:`Rejected` for bad input (never
retried; a command answers 422), :class:`Retryable` for a transient failure (retried with
backoff, then dead-lettered) and :class:`Permanent` for one that will never work
(dead-lettered at once). Any other exception is a bug: the call traps and the host classifies
it like a Rust panic. Nothing the handler wrote or emitted commits unless it returns.
"""

import json
import sys
import traceback
from typing import Any, List, Optional, Tuple

from componentize_py_types import Err
from wit_world import WitWorld as _WitWorld
from wit_world.imports import log as _log
from wit_world.imports import types as _types
from wit_world.imports import unit_of_work as _uow

__all__ = [
    "Plugin",
    "Message",
    "Rejected",
    "Retryable",
    "Permanent",
    "state",
    "events",
    "log",
    "export",
]


class HandlerError(Exception):
    """A failure the handler reports itself; see the subclasses."""


class Rejected(HandlerError):
    """Bad input: never retried. A command answers 422 with this message."""


class Retryable(HandlerError):
    """Transient: retried with backoff, then dead-lettered."""


class Permanent(HandlerError):
    """Will never work: dead-lettered at once."""


class Message:
    """A command, event or query as the host hands it over."""

    def __init__(self, envelope: _types.Envelope):
        self.envelope = envelope

    @property
    def id(self) -> str:
        return self.envelope.id

    @property
    def kind(self) -> str:
        return self.envelope.kind

    @property
    def partition_key(self) -> Optional[str]:
        return self.envelope.partition_key

    @property
    def tenant_id(self) -> Optional[str]:
        return self.envelope.tenant_id

    @property
    def correlation_id(self) -> str:
        """Shared by every message of one causal tree (the request's `Correlation-Id`)."""
        return self.envelope.correlation_id

    @property
    def causation_id(self) -> Optional[str]:
        """Id of the message whose handler emitted this one (None for a command)."""
        return self.envelope.causation_id

    @property
    def actor(self) -> Optional[str]:
        return self.envelope.actor

    @property
    def schema_version(self) -> int:
        return self.envelope.schema_version

    @property
    def occurred_at_ms(self) -> int:
        """Milliseconds since the Unix epoch at which the message was accepted or emitted."""
        return self.envelope.occurred_at_ms

    @property
    def headers(self) -> List[Tuple[str, str]]:
        return list(self.envelope.headers)

    def header(self, name: str) -> Optional[str]:
        """The first header called `name` (case-insensitive), if any."""
        wanted = name.lower()
        return next((v for k, v in self.envelope.headers if k.lower() == wanted), None)

    @property
    def attempt(self) -> int:
        """1 on first delivery, incremented on each retry."""
        return self.envelope.attempt

    @property
    def raw_payload(self) -> bytes:
        return self.envelope.payload

    def payload(self) -> Any:
        """The payload as JSON; :class:`Rejected` when it is not JSON."""
        try:
            return json.loads(self.envelope.payload)
        except ValueError as error:
            raise Rejected(f"the payload of `{self.kind}` is not valid JSON: {error}") from None


class _State:
    """This plugin's own keyed state, read and written inside the unit of work."""

    def get(self, key: str, default: Any = None) -> Any:
        value = _uow.get(key)
        if value is None:
            return default
        try:
            return json.loads(value)
        except ValueError as error:
            raise Permanent(f"state key `{key}` does not hold JSON: {error}") from None

    def put(self, key: str, value: Any) -> None:
        _uow.put(key, _to_json(value, f"state key `{key}`"))

    def delete(self, key: str) -> None:
        _uow.delete(key)


class _Events:
    def emit(self, kind: str, payload: Any, partition_key: Optional[str] = None) -> None:
        """Emits an event; it is published only if the unit of work commits. Events with the
        same partition key reach each subscriber in the order they were emitted."""
        _uow.emit(kind, _to_json(payload, f"event `{kind}`"), partition_key)


class _Log:
    """Logging into the host's log, tagged with the plugin's name."""

    def trace(self, message: str) -> None:
        _log.log(_log.Level.TRACE, message)

    def debug(self, message: str) -> None:
        _log.log(_log.Level.DEBUG, message)

    def info(self, message: str) -> None:
        _log.log(_log.Level.INFO, message)

    def warn(self, message: str) -> None:
        _log.log(_log.Level.WARN, message)

    def error(self, message: str) -> None:
        _log.log(_log.Level.ERROR, message)


state = _State()
events = _Events()
log = _Log()


class Plugin:
    """Base class of a plugin: set the class attributes, override the handlers you need."""

    name: str = ""
    version: str = "0.1.0"
    commands: list = []
    events: list = []
    queries: list = []

    def handle_command(self, msg: Message) -> Any:
        raise Rejected(f"plugin `{self.name}` does not handle command `{msg.kind}`")

    def handle_event(self, msg: Message) -> None:
        return None

    def handle_query(self, msg: Message) -> Any:
        raise Rejected(f"plugin `{self.name}` does not handle query `{msg.kind}`")


def _to_json(value: Any, what: str) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":")).encode()
    except (TypeError, ValueError) as error:
        raise Permanent(f"{what} cannot be written as JSON: {error}") from None


def _report_crash(error: BaseException) -> None:
    """Writes the one line the host keeps as the explanation of the trap that follows."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    print(f"panicked{where}: {type(error).__name__}: {error}", file=sys.stderr, flush=True)


def _run(handler, *args):
    """Runs a handler: its own errors become the contract's error variants; anything else is a
    bug, reported in one line and left to trap the call."""
    try:
        return handler(*args)
    except HandlerError as error:
        raise _as_wit_error(error)
    except Exception as error:
        _report_crash(error)
        raise


def _as_wit_error(error: HandlerError) -> Err:
    variant = {
        Rejected: _types.HandlerError_Rejected,
        Retryable: _types.HandlerError_Retryable,
        Permanent: _types.HandlerError_Permanent,
    }.get(type(error), _types.HandlerError_Permanent)
    return Err(variant(str(error)))


def export(plugin_class: type) -> type:
    """The `WitWorld` class componentize-py exports, running `plugin_class`'s handlers.
    Assign it to a module-level name `WitWorld` in the app module."""
    plugin = plugin_class()

    class World(_WitWorld):
        def describe(self) -> _types.PluginInfo:
            return _types.PluginInfo(
                plugin.name,
                plugin.version,
                list(plugin.commands),
                list(plugin.events),
                list(plugin.queries),
            )

        def handle_command(self, command: _types.Envelope) -> bytes:
            return _run(lambda: _to_json(plugin.handle_command(Message(command)), "the reply"))

        def handle_event(self, event: _types.Envelope) -> None:
            _run(lambda: plugin.handle_event(Message(event)))

        def handle_query(self, query: _types.Envelope) -> bytes:
            return _run(lambda: _to_json(plugin.handle_query(Message(query)), "the reply"))

    return World
