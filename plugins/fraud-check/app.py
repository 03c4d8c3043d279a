"""The `fraud-check` example plugin, in Python: screens every placed order.

- command `fraud.rules` `{"max_qty"}`: sets the screening rules; answers them.
- event `order.placed`: records a verdict in `check/{order_id}` — `"review"` when the quantity
  exceeds `max_qty`, else `"clear"` — and emits `fraud.checked` `{"order_id","verdict"}`
  (partition key: the order id). Until rules are set, a check fails `Retryable`: it is
  retried with backoff and, if no rules arrive in time, dead-lettered (replay it once they do).
- query `fraud.check` `{"order_id"}`: `{"order_id","verdict","qty"}`.
"""

import handler_host as hh

RULES = "rules"


class FraudCheck(hh.Plugin):
    name = "fraud-check"
    version = "0.1.0"
    commands = ["fraud.rules"]
    events = ["order.placed"]
    queries = ["fraud.check"]

    def handle_command(self, msg):
        rules = msg.payload()
        max_qty = rules.get("max_qty") if isinstance(rules, dict) else None
        if not isinstance(max_qty, int) or isinstance(max_qty, bool) or max_qty < 1:
            raise hh.Rejected("max_qty must be a whole number of at least 1")
        hh.state.put(RULES, {"max_qty": max_qty})
        hh.log.info(f"rules set: max_qty={max_qty}")
        return {"max_qty": max_qty}

    def handle_event(self, msg):
        order = msg.payload()
        rules = hh.state.get(RULES)
        if rules is None:
            raise hh.Retryable("no fraud rules yet: send `fraud.rules` first")
        verdict = "review" if order["qty"] > rules["max_qty"] else "clear"
        hh.state.put(f"check/{order['order_id']}", {
            "order_id": order["order_id"],
            "verdict": verdict,
            "qty": order["qty"],
        })
        hh.events.emit(
            "fraud.checked",
            {"order_id": order["order_id"], "verdict": verdict},
            partition_key=order["order_id"],
        )

    def handle_query(self, msg):
        order_id = msg.payload().get("order_id")
        check = hh.state.get(f"check/{order_id}")
        if check is None:
            raise hh.Rejected(f"no check for order `{order_id}`")
        return check


WitWorld = hh.export(FraudCheck)
