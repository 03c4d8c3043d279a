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

:meth:`events.emit <_Events.emit>` also takes a delay or a delivery time, headers and a schema
version; the ``schemas`` attribute declares JSON Schemas the host enforces on payloads.
"""

import collections.abc
import json
import sys
import traceback
from typing import Any, Iterable, List, Mapping, Optional, Tuple, Union

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
    def emit(
        self,
        kind: str,
        payload: Any,
        partition_key: Optional[str] = None,
        *,
        delay_ms: Optional[int] = None,
        deliver_at_ms: Optional[int] = None,
        headers: Union[Mapping[str, str], Iterable[Tuple[str, str]], None] = None,
        schema_version: Optional[int] = None,
    ) -> None:
        """Emits an event; it is published only if the unit of work commits. Events with the
        same partition key reach each subscriber in the order they were emitted.

        `delay_ms` (milliseconds after it is emitted) or `deliver_at_ms`
        (milliseconds since the Unix epoch; at once if it has passed) schedules the event: it
        is stored when the unit of work commits and not delivered before it is due. `headers`
        (a dict, or (name, value) pairs) become the event's headers; `schema_version` is the
        version of the payload's schema (1 when not given). Giving both `delay_ms` and
        `deliver_at_ms`, or a value of the wrong type, is a bug: `TypeError`/`ValueError`."""
        if delay_ms is not None and deliver_at_ms is not None:
            raise TypeError(f"emit of `{kind}`: give delay_ms or deliver_at_ms, not both")
        if partition_key is not None and not isinstance(partition_key, str):
            raise TypeError(
                f"emit of `{kind}`: partition_key must be a str, not {type(partition_key).__name__}"
            )
        deliver = None
        if delay_ms is not None:
            deliver = _types.Schedule_AfterMs(_whole(delay_ms, 0, _U64_MAX, "delay_ms", kind))
        elif deliver_at_ms is not None:
            deliver = _types.Schedule_AtMs(
                _whole(deliver_at_ms, 0, _U64_MAX, "deliver_at_ms", kind)
            )
        if schema_version is not None:
            schema_version = _whole(schema_version, 1, _U32_MAX, "schema_version", kind)
        options = _types.EmitOptions(
            partition_key=partition_key,
            deliver=deliver,
            headers=_header_pairs(headers, kind),
            schema_version=schema_version,
        )
        _uow.emit(kind, _to_json(payload, f"event `{kind}`"), options)


_U32_MAX = 2**32 - 1
_U64_MAX = 2**64 - 1


def _whole(value: Any, low: int, high: int, name: str, kind: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"emit of `{kind}`: {name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"emit of `{kind}`: {name} must be from {low} to {high}, not {value}")
    return value


def _header_pairs(headers: Any, kind: str) -> List[Tuple[str, str]]:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, collections.abc.Mapping) else headers
    if isinstance(items, (str, bytes)):
        raise TypeError(f"emit of `{kind}`: headers must be a dict or (name, value) pairs")
    pairs = []
    for item in items:
        try:
            name, value = item
        except (TypeError, ValueError):
            raise TypeError(
                f"emit of `{kind}`: headers must be a dict or (name, value) pairs, not {item!r}"
            ) from None
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(
                f"emit of `{kind}`: header names and values must be str, not {item!r}"
            )
        pairs.append((name, value))
    return pairs


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
    #: JSON Schemas of payloads, by kind: commands and queries it handles, events it emits.
    #: Each schema is a dict (or its JSON text); the whole may also be one JSON text.
    schemas: Union[dict, str] = {}

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


def _payload_schemas(plugin: Plugin) -> List[_types.PayloadSchema]:
    """`plugin.schemas` as the contract's records; a malformed declaration fails the build."""
    declared = plugin.schemas
    if isinstance(declared, str):
        try:
            declared = json.loads(declared)
        except ValueError as error:
            raise ValueError(f"`schemas` of plugin `{plugin.name}` is not JSON: {error}") from None
    if not isinstance(declared, collections.abc.Mapping):
        raise TypeError(
            f"`schemas` of plugin `{plugin.name}` must be a dict of kind to JSON Schema, "
            f"not {type(declared).__name__}"
        )
    records = []
    for kind, schema in declared.items():
        if not isinstance(kind, str):
            raise TypeError(f"`schemas` of plugin `{plugin.name}`: kind {kind!r} is not a str")
        if isinstance(schema, str):
            try:
                json.loads(schema)
            except ValueError as error:
                raise ValueError(
                    f"the schema of `{kind}` in plugin `{plugin.name}` is not JSON: {error}"
                ) from None
            text = schema
        elif isinstance(schema, (collections.abc.Mapping, bool)):
            try:
                text = json.dumps(schema, separators=(",", ":"))
            except (TypeError, ValueError) as error:
                raise TypeError(
                    f"the schema of `{kind}` in plugin `{plugin.name}` cannot be written as "
                    f"JSON: {error}"
                ) from None
        else:
            raise TypeError(
                f"the schema of `{kind}` in plugin `{plugin.name}` must be a dict (or its JSON "
                f"text), not {type(schema).__name__}"
            )
        records.append(_types.PayloadSchema(kind=kind, schema=text))
    return records


def export(plugin_class: type) -> type:
    """The `WitWorld` class componentize-py exports, running `plugin_class`'s handlers.
    Assign it to a module-level name `WitWorld` in the app module."""
    plugin = plugin_class()
    # Checked here, when the app module is imported at build time, not at the host's first call.
    schemas = _payload_schemas(plugin)

    class World(_WitWorld):
        def describe(self) -> _types.PluginInfo:
            return _types.PluginInfo(
                name=plugin.name,
                version=plugin.version,
                commands=list(plugin.commands),
                events=list(plugin.events),
                queries=list(plugin.queries),
                schemas=list(schemas),
            )

        def handle_command(self, command: _types.Envelope) -> bytes:
            return _run(lambda: _to_json(plugin.handle_command(Message(command)), "the reply"))

        def handle_event(self, event: _types.Envelope) -> None:
            _run(lambda: plugin.handle_event(Message(event)))

        def handle_query(self, query: _types.Envelope) -> bytes:
            return _run(lambda: _to_json(plugin.handle_query(Message(query)), "the reply"))

    return World
