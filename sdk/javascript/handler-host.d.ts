// Types of the Handler Host JavaScript SDK (`handler-host.js`), for editors and TypeScript
// checks of plugin sources. The envelope mirrors `envelope` in wit/plugin.wit.

/** A message as the host hands it over (camelCase names of the WIT record). */
export interface Envelope {
  id: string;
  kind: string;
  partitionKey?: string;
  tenantId?: string;
  correlationId: string;
  causationId?: string;
  actor?: string;
  schemaVersion: number;
  occurredAtMs: bigint;
  attempt: number;
  headers: Array<[string, string]>;
  payload: Uint8Array;
}

/** A failure the handler reports itself; the host decides from its class what happens next. */
export class HandlerError extends Error {
  readonly payload: { tag: "rejected" | "retryable" | "permanent"; val: string };
}
/** Bad input: never retried. A command answers 422 with this message. */
export class Rejected extends HandlerError {
  constructor(message: string);
}
/** Transient: retried with backoff, then dead-lettered. */
export class Retryable extends HandlerError {
  constructor(message: string);
}
/** Will never work: dead-lettered at once. */
export class Permanent extends HandlerError {
  constructor(message: string);
}

export class Message {
  readonly envelope: Envelope;
  readonly id: string;
  readonly kind: string;
  readonly partitionKey: string | undefined;
  readonly tenantId: string | undefined;
  /** Shared by every message of one causal tree (the request's `Correlation-Id`). */
  readonly correlationId: string;
  /** Id of the message whose handler emitted this one (undefined for a command). */
  readonly causationId: string | undefined;
  readonly actor: string | undefined;
  readonly schemaVersion: number;
  /** Milliseconds since the Unix epoch at which the message was accepted or emitted. */
  readonly occurredAtMs: number;
  readonly headers: Array<[string, string]>;
  /** The first header called `name` (case-insensitive), if any. */
  header(name: string): string | undefined;
  /** 1 on first delivery, incremented on each retry. */
  readonly attempt: number;
  readonly rawPayload: Uint8Array;
  /** The payload as JSON; throws `Rejected` when it is not JSON. */
  payload<T = any>(): T;
}

/** This plugin's own keyed state (JSON values), inside the unit of work. */
export const state: {
  get<T = any>(key: string, fallback?: T): T | undefined;
  put(key: string, value: unknown): void;
  delete(key: string): void;
};

/** How to emit an event (`events.emit`'s third argument, instead of a partition key). */
export interface EmitOptions {
  /** Aggregate id: events with the same key reach each subscriber in the order they were
   * emitted. None leaves the event unordered. */
  partitionKey?: string | null;
  /** Deliver this many milliseconds after it is emitted (not with `deliverAtMs`). */
  delayMs?: number | bigint | null;
  /** Deliver at this instant, in milliseconds since the Unix epoch; at once if it has passed
   * (not with `delayMs`). */
  deliverAtMs?: number | bigint | null;
  /** Headers of the event's envelope: an object, or [name, value] pairs. */
  headers?: Record<string, string> | Iterable<[string, string]> | null;
  /** The version of the payload's schema; 1 when not given. */
  schemaVersion?: number | null;
}

export const events: {
  /** Published only if the unit of work commits; one key's events stay in order. A scheduled
   * event (`delayMs`, `deliverAtMs`) is stored at commit and not delivered before it is due.
   * Throws on both `delayMs` and `deliverAtMs`, an unknown option or a mistyped value. */
  emit(kind: string, payload: unknown, partitionKeyOrOptions?: string | EmitOptions | null): void;
};

/** Logging into the host's log, tagged with the plugin's name. */
export const log: {
  trace(message: unknown): void;
  debug(message: unknown): void;
  info(message: unknown): void;
  warn(message: unknown): void;
  error(message: unknown): void;
};

/** Reports a bug (an exception that is no `HandlerError`) in the one line the host keeps as the
 * explanation of the trap that follows. Handlers need not call it: an exception they throw is
 * reported this way. */
export function reportCrash(error: unknown): void;

export interface PluginDefinition {
  name: string;
  version?: string;
  commands?: string[];
  /** Event kinds or patterns (`order.*`, `*`). */
  events?: string[];
  queries?: string[];
  /** JSON Schemas of payloads by kind (commands and queries it handles, events it emits), as
   * objects or JSON text. The host answers a command or query that does not match with 422
   * before the handler runs, and fails a call whose emitted event does not match. */
  schemas?: Record<string, object | boolean | string>;
  /** Returns the reply, written as JSON. */
  handleCommand?(msg: Message): unknown;
  handleEvent?(msg: Message): void;
  /** Returns the reply, written as JSON. */
  handleQuery?(msg: Message): unknown;
}

/** The component's exports for `plugin`; export all four from the entry module. */
export function exportPlugin(plugin: PluginDefinition): {
  describe(): {
    name: string;
    version: string;
    commands: string[];
    events: string[];
    queries: string[];
    schemas: Array<{ kind: string; schema: string }>;
  };
  handleCommand(envelope: Envelope): Uint8Array;
  handleEvent(envelope: Envelope): void;
  handleQuery(envelope: Envelope): Uint8Array;
};
