/** Types of `@evhost/sdk/testing`: run plugins natively with in-memory state. */

import type {
  Action,
  HandlerDefinition,
  JsonObject,
  PolicyDefinition,
  ProjectionDefinition,
  TypeMap,
  TypedClass,
} from './index.js';

/** A key-value state in memory with the host's rules. */
export declare class MemoryState {
  /** The value under `key` as JSON text. */
  get(key: string): string | undefined;
  put(key: string, value: string): void;
  delete(key: string): void;
  scan(prefix: string, after: string | undefined, limit: number): Array<[string, string]>;
  /** The value under `key`, parsed. */
  value<T = any>(key: string): T | undefined;
  /** Stores `value` as JSON, to set up a test. */
  insert(key: string, value: unknown): void;
  /** Every entry, parsed, in key order. */
  toObject(): Record<string, any>;
  readonly size: number;
  readonly writeCount: number;
  transaction<R>(call: (state: MemoryState) => R): R;
}

/** The fields of an event record; all but position, stream and type have defaults. */
export interface RecordFields {
  position: number;
  stream: string;
  type: string | TypedClass;
  data?: unknown;
  version?: number;
  id?: string;
  metadata?: JsonObject;
  /** RFC 3339 text or milliseconds since the epoch. */
  recordedAt?: string | number;
}

/** A host event record. */
export interface EventRecord {
  position: bigint;
  streamId: string;
  version: bigint;
  id: string;
  eventType: string;
  data: string;
  metadata: string;
  recordedAt: string;
}

export declare function eventRecord(fields: RecordFields): EventRecord;

export declare function captureLog(): { lines: Array<{ level: string; message: string }>; stop(): void };

/** An event as `decide` returns it. */
export interface DecidedEvent {
  type: string;
  data: any;
  metadata?: JsonObject;
}

export declare function evolve<S>(
  handler: HandlerDefinition<S, any, any>,
  events: Array<{ type: string | TypedClass; data?: unknown } | object>,
  state?: S,
): S;

export declare function decide<S>(
  handler: HandlerDefinition<S, any, any>,
  command: { type: string | TypedClass; data?: unknown; stream?: string; id?: string; metadata?: JsonObject } | object,
  state?: S,
): DecidedEvent[];

export declare function apply(
  projection: ProjectionDefinition<any>,
  memory: MemoryState,
  records: Array<RecordFields | EventRecord>,
): void;

export declare function query<T = any>(
  projection: ProjectionDefinition<any>,
  memory: MemoryState,
  path: string,
  params?: Record<string, string | number> | Array<[string, string]>,
): T;

export declare function react(policy: PolicyDefinition<any>, memory: MemoryState, record: RecordFields | EventRecord): Action[];
export declare function fire(policy: PolicyDefinition<any>, memory: MemoryState, timer: { key: string; payload?: unknown }): Action[];
export declare function reject(
  policy: PolicyDefinition<any>,
  memory: MemoryState,
  command: { stream: string; commandType: string; data?: unknown; id?: string; metadata?: JsonObject },
  reason: string,
): Action[];
