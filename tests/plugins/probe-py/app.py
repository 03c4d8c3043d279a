"""Test-only plugin: records the envelope of what it is handed, through the Python SDK.

- event `order.placed`: records `{kind, id, tenant_id, actor, correlation_id, causation_id,
  headers, schema_version}` under `seen/order.placed` and emits `probe.py.saw` `{}` (partition
  key: the order id; header `emitted-by: probe-py`; schema version 2), so the next language in
  the chain sees an event emitted from Python, with the emit options it set.
- query `probe.py.seen` `{"kind"}`: what was recorded for that kind. Its payload schema
  requires `kind`, a string: anything else is answered 422 by the host.
"""

import handler_host as hh


class ProbePy(hh.Plugin):
    name = "probe-py"
    version = "0.1.0"
    events = ["order.placed"]
    queries = ["probe.py.seen"]
    schemas = {
        "probe.py.seen": {
            "type": "object",
            "properties": {"kind": {"type": "string"}},
            "required": ["kind"],
        },
    }

    def handle_event(self, msg):
        hh.state.put(f"seen/{msg.kind}", {
            "kind": msg.kind,
            "id": msg.id,
            "tenant_id": msg.tenant_id,
            "actor": msg.actor,
            "correlation_id": msg.correlation_id,
            "causation_id": msg.causation_id,
            "headers": msg.headers,
            "schema_version": msg.schema_version,
        })
        hh.events.emit(
            "probe.py.saw",
            {},
            partition_key=msg.partition_key,
            headers={"emitted-by": "probe-py"},
            schema_version=2,
        )

    def handle_query(self, msg):
        kind = msg.payload().get("kind")
        seen = hh.state.get(f"seen/{kind}")
        if seen is None:
            raise hh.Rejected(f"nothing of kind `{kind}` seen yet")
        return seen


WitWorld = hh.export(ProbePy)
