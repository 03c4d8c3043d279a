/**
 * Write Handler Host plugins in JavaScript.
 *
 * A plugin describes what it handles and implements the handlers it needs, then exports them
 * with `exportPlugin` from its entry module:
 *
 *   import { exportPlugin, Rejected, state, events } from "handler-host";
 *
 *   export const { describe, handleCommand, handleEvent, handleQuery } = exportPlugin({
 *     name: "greeter",
 *     version: "0.1.0",
 *     commands: ["greeter.greet"],
 *     handleCommand(msg) {
 *       const { name } = msg.payload();
 *       if (!name) throw new Rejected("name must not be empty");
 *       state.put(`greeted/${name}`, true);
 *       events.emit("greeter.greeted", { name }, name);
 *       return { greeting: `Hello, ${name}!` };
 *     },
 *   });
 *
 * Payloads, state values and replies are JSON. Throw `Rejected` for bad input (never retried;
 * a command answers 422), `Retryable` for a transient failure (retried with backoff, then
 * dead-lettered) and `Permanent` for one that will never work (dead-lettered at once). Any other
 * exception is a bug: the call traps and the host classifies it like a Rust panic. Nothing the
 * handler wrote or emitted commits unless it returns.
 *
 * `events.emit` also takes options (a delay or a delivery time, headers, a schema version), and
 * `schemas` in the definition declares JSON Schemas the host enforces on payloads.
 */

import * as unitOfWork from "handler-host:plugin/unit-of-work@0.2.0";
import { log as hostLog } from "handler-host:plugin/log@0.2.0";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A failure the handler reports itself; the host decides from its class what happens next. */
export class HandlerError extends Error {
  constructor(tag, message) {
    super(message);
    this.name = tag;
    // What the component's `handler-error` variant carries.
    this.payload = { tag, val: String(message) };
  }
}

/** Bad input: never retried. A command answers 422 with this message. */
export class Rejected extends HandlerError {
  constructor(message) {
    super("rejected", message);
  }
}

/** Transient: retried with backoff, then dead-lettered. */
export class Retryable extends HandlerError {
  constructor(message) {
    super("retryable", message);
  }
}

/** Will never work: dead-lettered at once. */
export class Permanent extends HandlerError {
  constructor(message) {
    super("permanent", message);
  }
}

function toJson(value, what) {
  let text;
  try {
    text = JSON.stringify(value === undefined ? null : value);
  } catch (error) {
    throw new Permanent(`${what} cannot be written as JSON: ${error}`);
  }
  return encoder.encode(text);
}

/** A command, event or query as the host hands it over. */
export class Message {
  constructor(envelope) {
    this.envelope = envelope;
  }
  get id() {
    return this.envelope.id;
  }
  get kind() {
    return this.envelope.kind;
  }
  get partitionKey() {
    return this.envelope.partitionKey;
  }
  get tenantId() {
    return this.envelope.tenantId;
  }
  /** Shared by every message of one causal tree (the request's `Correlation-Id`). */
  get correlationId() {
    return this.envelope.correlationId;
  }
  /** Id of the message whose handler emitted this one (undefined for a command). */
  get causationId() {
    return this.envelope.causationId;
  }
  get actor() {
    return this.envelope.actor;
  }
  get schemaVersion() {
    return this.envelope.schemaVersion;
  }
  /** Milliseconds since the Unix epoch at which the message was accepted or emitted. */
  get occurredAtMs() {
    return Number(this.envelope.occurredAtMs);
  }
  get headers() {
    return this.envelope.headers;
  }
  /** The first header called `name` (case-insensitive), if any. */
  header(name) {
    const wanted = name.toLowerCase();
    const found = this.envelope.headers.find(([key]) => key.toLowerCase() === wanted);
    return found === undefined ? undefined : found[1];
  }
  /** 1 on first delivery, incremented on each retry. */
  get attempt() {
    return this.envelope.attempt;
  }
  get rawPayload() {
    return this.envelope.payload;
  }
  /** The payload as JSON; `Rejected` when it is not JSON. */
  payload() {
    try {
      return JSON.parse(decoder.decode(this.envelope.payload));
    } catch (error) {
      throw new Rejected(`the payload of \`${this.kind}\` is not valid JSON: ${error.message}`);
    }
  }
}

/** This plugin's own keyed state, read and written inside the unit of work. */
export const state = {
  get(key, fallback = undefined) {
    const value = unitOfWork.get(key);
    if (value === undefined || value === null) return fallback;
    try {
      return JSON.parse(decoder.decode(value));
    } catch (error) {
      throw new Permanent(`state key \`${key}\` does not hold JSON: ${error.message}`);
    }
  },
  put(key, value) {
    unitOfWork.put(key, toJson(value, `state key \`${key}\``));
  },
  delete(key) {
    unitOfWork.delete(key);
  },
};

const U32_MAX = 2 ** 32 - 1;
const U64_MAX = 2n ** 64n - 1n;
const EMIT_OPTIONS = ["partitionKey", "delayMs", "deliverAtMs", "headers", "schemaVersion"];

/** A whole number of milliseconds as the contract's u64 (a BigInt). */
function millis(value, name, kind) {
  let whole;
  if (typeof value === "bigint") whole = value;
  else if (typeof value === "number" && Number.isSafeInteger(value)) whole = BigInt(value);
  else throw new TypeError(`emit of \`${kind}\`: ${name} must be a whole number, not ${value}`);
  if (whole < 0n || whole > U64_MAX) {
    throw new RangeError(`emit of \`${kind}\`: ${name} must be from 0 to 2^64 - 1, not ${value}`);
  }
  return whole;
}

/** Headers given as an object or as [name, value] pairs, as the contract's list of pairs. */
function headerPairs(headers, kind) {
  if (headers === undefined || headers === null) return [];
  if (typeof headers !== "object") {
    throw new TypeError(`emit of \`${kind}\`: headers must be an object or [name, value] pairs`);
  }
  const iterable = typeof headers[Symbol.iterator] === "function";
  const pairs = [];
  for (const pair of iterable ? headers : Object.entries(headers)) {
    if (!Array.isArray(pair) || pair.length !== 2) {
      throw new TypeError(`emit of \`${kind}\`: headers must be an object or [name, value] pairs`);
    }
    const [name, value] = pair;
    if (typeof name !== "string" || typeof value !== "string") {
      throw new TypeError(`emit of \`${kind}\`: header names and values must be strings (${name})`);
    }
    pairs.push([name, value]);
  }
  return pairs;
}

/** The contract's `emit-options` for the third argument of `events.emit`. */
function emitOptions(kind, partitionKeyOrOptions) {
  if (partitionKeyOrOptions === undefined || partitionKeyOrOptions === null) {
    return { partitionKey: undefined, deliver: undefined, headers: [], schemaVersion: undefined };
  }
  if (typeof partitionKeyOrOptions === "string") {
    return { partitionKey: partitionKeyOrOptions, deliver: undefined, headers: [], schemaVersion: undefined };
  }
  if (typeof partitionKeyOrOptions !== "object" || Array.isArray(partitionKeyOrOptions)) {
    throw new TypeError(
      `emit of \`${kind}\`: the third argument is a partition key (a string) or options, not ${partitionKeyOrOptions}`,
    );
  }
  const { partitionKey, delayMs, deliverAtMs, headers, schemaVersion } = partitionKeyOrOptions;
  const unknown = Object.keys(partitionKeyOrOptions).filter((key) => !EMIT_OPTIONS.includes(key));
  if (unknown.length > 0) {
    throw new TypeError(
      `emit of \`${kind}\`: unknown option ${unknown.join(", ")} (options: ${EMIT_OPTIONS.join(", ")})`,
    );
  }
  if (partitionKey !== undefined && partitionKey !== null && typeof partitionKey !== "string") {
    throw new TypeError(`emit of \`${kind}\`: partitionKey must be a string, not ${partitionKey}`);
  }
  const hasDelay = delayMs !== undefined && delayMs !== null;
  const hasAt = deliverAtMs !== undefined && deliverAtMs !== null;
  if (hasDelay && hasAt) {
    throw new TypeError(`emit of \`${kind}\`: give delayMs or deliverAtMs, not both`);
  }
  let deliver;
  if (hasDelay) deliver = { tag: "after-ms", val: millis(delayMs, "delayMs", kind) };
  else if (hasAt) deliver = { tag: "at-ms", val: millis(deliverAtMs, "deliverAtMs", kind) };
  let version;
  if (schemaVersion !== undefined && schemaVersion !== null) {
    if (!Number.isInteger(schemaVersion) || schemaVersion < 1 || schemaVersion > U32_MAX) {
      throw new RangeError(
        `emit of \`${kind}\`: schemaVersion must be a whole number from 1 to ${U32_MAX}, not ${schemaVersion}`,
      );
    }
    version = schemaVersion;
  }
  return {
    partitionKey: partitionKey ?? undefined,
    deliver,
    headers: headerPairs(headers, kind),
    schemaVersion: version,
  };
}

export const events = {
  /** Emits an event; it is published only if the unit of work commits. Events with the same
   * partition key reach each subscriber in the order they were emitted.
   *
   * The third argument is the partition key, or options: `{ partitionKey, delayMs,
   * deliverAtMs, headers, schemaVersion }`. `delayMs` (milliseconds after it is emitted) or
   * `deliverAtMs` (milliseconds since the Unix epoch; at once if it has passed) schedules the
   * event: it is stored when the unit of work commits and not delivered before it is due.
   * `headers` (an object or [name, value] pairs) become the event's headers; `schemaVersion`
   * is the version of the payload's schema (1 when not given). Both `delayMs` and
   * `deliverAtMs`, an unknown option or a value of the wrong type is a bug: it throws. */
  emit(kind, payload, partitionKeyOrOptions = undefined) {
    const options = emitOptions(kind, partitionKeyOrOptions);
    unitOfWork.emit(kind, toJson(payload, `event \`${kind}\``), options);
  },
};

/** Logging into the host's log, tagged with the plugin's name. */
export const log = {
  trace: (message) => hostLog("trace", String(message)),
  debug: (message) => hostLog("debug", String(message)),
  info: (message) => hostLog("info", String(message)),
  warn: (message) => hostLog("warn", String(message)),
  error: (message) => hostLog("error", String(message)),
};

/** Reports a bug (an exception that is no `HandlerError`) in the one line the host keeps as
 * the explanation of the trap that follows: where it was thrown, and what. */
export function reportCrash(error) {
  const frame = String(error?.stack ?? "").split("\n").find((line) => line.includes(":"));
  const where = frame ? ` at ${frame.replace(/^.*@/, "")}` : "";
  const what = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  console.error(`panicked${where}: ${what}`);
}

/** Runs a handler: its own errors reach the host as the contract's error variants; anything
 * else is a bug, reported before the call traps. */
function run(handler) {
  try {
    return handler();
  } catch (error) {
    if (!(error instanceof HandlerError)) reportCrash(error);
    throw error;
  }
}

/** `plugin.schemas` (kind → JSON Schema as an object or its JSON text) as the contract's
 * `payload-schema` records; a malformed declaration fails the build. */
function payloadSchemas(plugin) {
  const declared = plugin.schemas ?? {};
  if (typeof declared !== "object" || Array.isArray(declared)) {
    throw new TypeError(`\`schemas\` of plugin \`${plugin.name}\` must map kinds to JSON Schemas`);
  }
  return Object.entries(declared).map(([kind, schema]) => {
    if (typeof schema === "string") {
      try {
        JSON.parse(schema);
      } catch (error) {
        throw new TypeError(`the schema of \`${kind}\` in plugin \`${plugin.name}\` is not JSON: ${error.message}`);
      }
      return { kind, schema };
    }
    if (typeof schema !== "boolean" && (schema === null || typeof schema !== "object" || Array.isArray(schema))) {
      throw new TypeError(
        `the schema of \`${kind}\` in plugin \`${plugin.name}\` must be an object (or its JSON text), not ${schema}`,
      );
    }
    return { kind, schema: JSON.stringify(schema) };
  });
}

/** The component's exports (`describe`, `handleCommand`, `handleEvent`, `handleQuery`) for
 * `plugin`: `{ name, version, commands, events, queries, schemas, handleCommand, handleEvent,
 * handleQuery }`, every field but `name` optional. */
export function exportPlugin(plugin) {
  const info = {
    name: plugin.name,
    version: plugin.version ?? "0.1.0",
    commands: plugin.commands ?? [],
    events: plugin.events ?? [],
    queries: plugin.queries ?? [],
    // Checked here, when the module is initialised at build time, not at the host's first call.
    schemas: payloadSchemas(plugin),
  };
  return {
    describe: () => info,
    handleCommand(envelope) {
      const msg = new Message(envelope);
      if (!plugin.handleCommand) throw new Rejected(`plugin \`${info.name}\` does not handle command \`${msg.kind}\``);
      return run(() => toJson(plugin.handleCommand(msg), "the reply"));
    },
    handleEvent(envelope) {
      if (plugin.handleEvent) run(() => plugin.handleEvent(new Message(envelope)));
    },
    handleQuery(envelope) {
      const msg = new Message(envelope);
      if (!plugin.handleQuery) throw new Rejected(`plugin \`${info.name}\` does not handle query \`${msg.kind}\``);
      return run(() => toJson(plugin.handleQuery(msg), "the reply"));
    },
  };
}
