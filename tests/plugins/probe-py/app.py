"""Test-only plugin: records the envelope of what it is handed, through the Python SDK.

- event `order.placed`: records `{kind, id, tenant_id, actor, correlation_id, causation_id}`
  under `seen/order.placed` and emits `probe.py.saw` `{}` (partition key: the order id), so
  the next language in the chain sees an event emitted from Python.
- query `probe.py.seen` `{"kind"}`: what was recorded for that kind.
"""

import handler_host as hh


class ProbePy(hh.Plugin):
    name = "probe-py"
    version = "0.1.0"
    events = ["order.placed"]
    queries = ["probe.py.seen"]

    def handle_event(self, msg):
        hh.state.put(f"seen/{msg.kind}", {
            "kind": msg.kind,
            "id": msg.id,
            "tenant_id": msg.tenant_id,
            "actor": msg.actor,
            "correlation_id": msg.correlation_id,
            "causation_id": msg.causation_id,
        })
        hh.events.emit("probe.py.saw", {}, partition_key=msg.partition_key)

    def handle_query(self, msg):
        kind = msg.payload().get("kind")
        seen = hh.state.get(f"seen/{kind}")
        if seen is None:
            raise hh.Rejected(f"nothing of kind `{kind}` seen yet")
        return seen


WitWorld = hh.export(ProbePy)
