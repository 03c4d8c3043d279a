/**
 * Test-only plugin: records the envelope of what it is handed, through the JavaScript SDK.
 *
 * - event `probe.py.saw` (emitted by the Python probe): records
 *   `{kind, id, tenantId, actor, correlationId, causationId, headers, schemaVersion}` under
 *   `seen/probe.py.saw` and emits `probe.js.saw` `{}` (same partition key; header
 *   `emitted-by: probe-js`; schema version 2), for the Rust test plugin `flaky`.
 * - query `probe.js.seen` `{"kind"}`: what was recorded for that kind. Its payload schema
 *   requires `kind`, a string: anything else is answered 422 by the host.
 */

import { exportPlugin, Rejected, state, events } from "handler-host";

export const { describe, handleCommand, handleEvent, handleQuery } = exportPlugin({
  name: "probe-js",
  version: "0.1.0",
  events: ["probe.py.saw"],
  queries: ["probe.js.seen"],
  schemas: {
    "probe.js.seen": {
      type: "object",
      properties: { kind: { type: "string" } },
      required: ["kind"],
    },
  },

  handleEvent(msg) {
    state.put(`seen/${msg.kind}`, {
      kind: msg.kind,
      id: msg.id,
      tenantId: msg.tenantId ?? null,
      actor: msg.actor ?? null,
      correlationId: msg.correlationId,
      causationId: msg.causationId ?? null,
      headers: msg.headers,
      schemaVersion: msg.schemaVersion,
    });
    events.emit("probe.js.saw", {}, {
      partitionKey: msg.partitionKey,
      headers: { "emitted-by": "probe-js" },
      schemaVersion: 2,
    });
  },

  handleQuery(msg) {
    const { kind } = msg.payload();
    const seen = state.get(`seen/${kind}`);
    if (seen === undefined) throw new Rejected(`nothing of kind \`${kind}\` seen yet`);
    return seen;
  },
});
