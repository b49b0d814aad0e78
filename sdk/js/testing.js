/**
 * `@evhost/sdk/testing`: runs handlers, projections and policies natively, without WebAssembly
 * or a host, through the same wire-level code as the component's exports (state bytes, JSON
 * text, the state cache, the action encoding), so `node --test` checks what the host will run.
 *
 * - handlers: `evolve(handler, events, state?)` and `decide(handler, command, state?)`;
 * - projections: `apply(projection, memory, records)` and `query(projection, memory, path, params?)`;
 * - policies: `react(policy, memory, record)`, `fire(policy, memory, timer)` and
 *   `reject(policy, memory, command, reason)`;
 * - `MemoryState`: a key-value state with the host's rules (keys of 1 to 1024 bytes, values of
 *   JSON text up to 1 MiB, scans in key order in pages of at most 1000, a call's writes kept all
 *   together or not at all); `eventRecord(...)` makes the host's event records;
 *   `captureLog()` collects log lines.
 * @module
 */

import { fromWitAction } from './src/actions.js';
import { Rejection } from './src/errors.js';
import { decideWire, evolveWire } from './src/handler.js';
import { setLogSink } from './src/log.js';
import { applyWire, queryWire } from './src/projection.js';
import { onRejectedWire, onTimerWire, reactWire } from './src/policy.js';
import { HOST_SCAN_PAGE, MAX_KEY_BYTES, compareKeys } from './src/state.js';
import { rfc3339FromMillis } from './src/time.js';
import { typeNameOf, typedInstance } from './src/types.js';

/** Longest value the host stores, in bytes. */
const MAX_VALUE_BYTES = 1 << 20;
/** The time of position 0 when a record gives none: 2026-01-01T00:00:00Z. */
const TEST_EPOCH_MS = 1_767_225_600_000;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A projection's or a policy's key-value state in memory, with the host's rules. */
export class MemoryState {
  /** @type {Map<string, string>} key → JSON text */
  #entries = new Map();
  #writes = 0;

  /** The value under `key` as JSON text (the host's `state.get`). */
  get(key) {
    return this.#entries.get(key);
  }

  /** Stores JSON text under `key` (the host's `state.put`), refusing what the host refuses. */
  put(key, value) {
    checkKey(key);
    if (typeof value !== 'string') throw new TypeError(`the value of state key ${JSON.stringify(key)} is not text`);
    const bytes = encoder.encode(value).length;
    if (bytes > MAX_VALUE_BYTES) {
      throw new Error(`the value of state key ${JSON.stringify(key)} is ${bytes} bytes; expected at most ${MAX_VALUE_BYTES}`);
    }
    try {
      JSON.parse(value);
    } catch (error) {
      throw new Error(`the value of state key ${JSON.stringify(key)} is not JSON text: ${error.message}`);
    }
    this.#entries.set(key, value);
    this.#writes += 1;
  }

  /** Removes `key` (the host's `state.delete`). */
  delete(key) {
    checkKey(key);
    this.#entries.delete(key);
    this.#writes += 1;
  }

  /**
   * Entries whose keys start with `prefix`, in key order, after `after`, at most `limit` and never
   * more than the host's 1000 (the host's `state.scan`).
   * @returns {Array<[string, string]>}
   */
  scan(prefix, after, limit) {
    const cap = Math.min(limit, HOST_SCAN_PAGE);
    return [...this.#entries.keys()]
      .filter((key) => key.startsWith(prefix) && (after === undefined || compareKeys(key, after) > 0))
      .sort(compareKeys)
      .slice(0, cap)
      .map((key) => [key, this.#entries.get(key)]);
  }

  /** The value under `key`, parsed; undefined if absent. */
  value(key) {
    const text = this.#entries.get(key);
    return text === undefined ? undefined : JSON.parse(text);
  }

  /** Stores `value` (as JSON) under `key`, outside any call: to set up a test. */
  insert(key, value) {
    this.put(key, JSON.stringify(value));
  }

  /** Every entry, parsed, as an object in key order: `assert.deepStrictEqual(memory.toObject(), {...})`. */
  toObject() {
    const keys = [...this.#entries.keys()].sort(compareKeys);
    return Object.fromEntries(keys.map((key) => [key, JSON.parse(this.#entries.get(key))]));
  }

  /** How many keys hold a value. */
  get size() {
    return this.#entries.size;
  }

  /** How many puts and deletes calls have made so far: one per key written in a call. */
  get writeCount() {
    return this.#writes;
  }

  /**
   * Runs `call` as one call of a plugin: its writes are kept if it returns, and none of them if
   * it throws (the host commits a call's writes with its checkpoint, or not at all).
   */
  transaction(call) {
    const before = new Map(this.#entries);
    const writesBefore = this.#writes;
    try {
      return call(this);
    } catch (error) {
      this.#entries = before;
      this.#writes = writesBefore;
      throw error;
    }
  }
}

function checkKey(key) {
  const bytes = typeof key === 'string' ? encoder.encode(key).length : 0;
  if (bytes === 0 || bytes > MAX_KEY_BYTES) {
    throw new Error(`state key ${JSON.stringify(key)} is ${bytes} bytes; expected 1 to ${MAX_KEY_BYTES}`);
  }
}

/**
 * A recorded event as the host hands it to a projection or a policy. Only `position`, `stream`,
 * `type` and `data` are needed: the version defaults to the position, the id to
 * `event-<position>`, the metadata to `{}`, and `recordedAt` to `position` seconds after
 * 2026-01-01T00:00:00Z (give RFC 3339 text or milliseconds since the epoch to change it).
 * @param {{position: number, stream: string, type: string | Function, data?: unknown, version?: number,
 *   id?: string, metadata?: object, recordedAt?: string | number}} record
 */
export function eventRecord({ position, stream, type, data = null, version = position, id, metadata = {}, recordedAt }) {
  const at = recordedAt ?? TEST_EPOCH_MS + position * 1000;
  return {
    position: BigInt(position),
    streamId: stream,
    version: BigInt(version),
    id: id ?? `event-${position}`,
    eventType: typeNameOf(type),
    data: JSON.stringify(data),
    metadata: JSON.stringify(metadata),
    recordedAt: typeof at === 'number' ? rfc3339FromMillis(at) : at,
  };
}

/** A host record as is, or one made by `eventRecord` from its fields. */
function asRecord(record) {
  return record.eventType !== undefined && record.streamId !== undefined ? record : eventRecord(record);
}

/**
 * Collects log lines (the SDK's `log` and, in a component, `console`) until `stop()`:
 * `const captured = captureLog(); ...; captured.stop(); captured.lines`.
 * @returns {{lines: Array<{level: string, message: string}>, stop: () => void}}
 */
export function captureLog() {
  const lines = [];
  const previous = setLogSink((level, message) => lines.push({ level, message }));
  return { lines, stop: () => setLogSink(previous) };
}

/**
 * The state that `events` fold into from `state` (undefined: the handler's initial state),
 * through the handler's `evolve` as the host calls it: events are `{type, data}` (a `decide`
 * result, say) or typed class instances.
 */
export function evolve(definition, events, state) {
  const batch = events.map((event, index) => {
    const { type, data } = eventParts(event);
    return { type, version: index + 1, data: JSON.stringify(data ?? null) };
  });
  const bytes = evolveWire(definition, stateBytes(state), batch);
  return JSON.parse(decoder.decode(bytes));
}

/**
 * Decides `command` (`{type, data, stream?, id?, metadata?}`, or a typed class instance) against
 * `state` (undefined: the handler's initial state), as the host calls `decide`. Returns the events
 * (`{type, data}`, plus `metadata` when set) or throws the `Rejection`. The stream defaults to
 * `<category>-1`, the id to `command-1`.
 */
export function decide(definition, command, state) {
  const typed = typedInstance(command);
  const { type, data } = typed ?? { type: typeNameOf(command.type), data: command.data };
  const envelope = typed ? {} : command;
  const decision = decideWire(definition, stateBytes(state), {
    id: envelope.id ?? 'command-1',
    stream: envelope.stream ?? `${definition.category}-1`,
    type,
    data: JSON.stringify(data ?? null),
    metadata: JSON.stringify(envelope.metadata ?? {}),
  });
  if ('rejection' in decision) throw new Rejection(decision.rejection);
  return decision.events.map(({ eventType, data: text, metadata }) =>
    metadata === undefined
      ? { type: eventType, data: JSON.parse(text) }
      : { type: eventType, data: JSON.parse(text), metadata: JSON.parse(metadata) },
  );
}

function eventParts(value) {
  const typed = typedInstance(value);
  if (typed) return typed;
  return { type: typeNameOf(value.type), data: value.data };
}

function stateBytes(state) {
  return state === undefined ? undefined : encoder.encode(JSON.stringify(state));
}

/**
 * Applies `records` (host records or `eventRecord` fields) to `memory` as one batch of the
 * projection, as the component's `apply` does. A failure throws and writes nothing.
 */
export function apply(definition, memory, records) {
  const events = records.map(asRecord);
  memory.transaction(() => applyWire(definition, memory, events));
}

/**
 * Asks the projection the query `path` with `params` (an object or `[name, value]` pairs), as
 * `GET /projections/{name}/query/{path}` does: its answer, parsed. What the query throws is
 * thrown.
 */
export function query(definition, memory, path, params = {}) {
  const pairs = Array.isArray(params) ? params : Object.entries(params);
  return JSON.parse(queryWire(definition, memory, path, pairs.map(([name, value]) => [name, String(value)])));
}

/** Has the policy react to `record`: its actions; its writes kept in `memory` unless it throws. */
export function react(definition, memory, record) {
  const wire = asRecord(record);
  return memory.transaction(() => reactWire(definition, memory, wire)).map(fromWitAction);
}

/**
 * Fires a timer of the policy: a `schedule(...)` action it returned, or `{key, payload}`.
 * Returns its actions.
 */
export function fire(definition, memory, timer) {
  const payload = JSON.stringify(timer.payload ?? null);
  return memory.transaction(() => onTimerWire(definition, memory, timer.key, payload)).map(fromWitAction);
}

/**
 * Tells the policy that `command` (a `send(...)` action it returned) was rejected for `reason`;
 * the command is delivered with the id `rejected-1` (or `command.id`) and empty metadata.
 * Returns its actions.
 */
export function reject(definition, memory, command, reason) {
  const wire = {
    id: command.id ?? 'rejected-1',
    streamId: command.stream,
    commandType: command.commandType,
    data: JSON.stringify(command.data ?? null),
    metadata: JSON.stringify(command.metadata ?? {}),
  };
  return memory.transaction(() => onRejectedWire(definition, memory, wire, reason)).map(fromWitAction);
}
