/**
 * Types of `@evhost/sdk`. Name the data of each command and event type in a map, and the
 * handler's, projection's or policy's functions get typed data per type name:
 *
 * ```ts
 * type Commands = { CheckIn: { patient_id: string; triage_level: number } };
 * type Events = { PatientCheckedIn: { patient_id: string; triage_level: number } };
 * export default handler<{ checkedIn: boolean }, Commands, Events>({ ... })
 *   .decide('CheckIn', (state, command) => [{ type: 'PatientCheckedIn', data: command.data }]);
 * ```
 */

/** A JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A JSON object (metadata). */
export type JsonObject = { [key: string]: Json };

/** A typed class: constructed from an event's or command's data; its name is the type name. */
export interface TypedClass<T = any> {
  new (data: any): T;
  /** The type name, when it is not the class's name. */
  readonly type?: string;
  readonly name: string;
}

/** Data types by type name: `{ CheckIn: { patient_id: string } }`. */
export type TypeMap = Record<string, unknown>;

type Names<M> = Extract<keyof M, string>;

// ----- handlers -------------------------------------------------------------------------------

/** An event of a handler's own stream, as `evolve` functions receive it. */
export interface StreamEvent<K extends string = string, D = unknown> {
  /** The event type. */
  readonly type: K;
  /** Version within the stream: 1-based and contiguous. */
  readonly version: number;
  /** The event's data: parsed JSON, or an instance of its typed class. */
  readonly data: D;
  /** The event's data as the recorded JSON text. */
  readonly dataJson: string;
}

/** A command, as `decide` functions receive it. */
export declare class Command<K extends string = string, D = unknown> {
  /** The command's id: the host records the outcome under it. */
  readonly id: string;
  /** The stream the command is about (`visit-42`). */
  readonly stream: string;
  /** The command type. */
  readonly type: K;
  /** The command's data: parsed JSON, or an instance of its typed class. */
  readonly data: D;
  /** The command's metadata. */
  readonly metadata: JsonObject;
  /** The command's data as the JSON text it was sent with. */
  readonly dataJson: string;
  /** The part of the stream's name after the first `-` (`42` for `visit-42`). */
  readonly entityId: string;
}

/** A typed class's instance: its class names the type, and it is its own data. */
export interface TypedInstance {
  readonly constructor: Function;
  readonly type?: never;
}

/** An event as `{type, data, metadata?}`. */
export type PlainEvent<Events extends TypeMap> = {
  [K in Names<Events>]: { type: K; data: Events[K]; metadata?: JsonObject };
}[Names<Events>];

/** An event a handler decides to append: `{type, data, metadata?}` or a typed class's instance. */
export type NewEvent<Events extends TypeMap> = PlainEvent<Events> | TypedInstance;

/** What a `decide` function returns: an array of events, one plain event, or nothing. */
export type Decision<Events extends TypeMap> = NewEvent<Events>[] | PlainEvent<Events> | void;

/** A command handler: decides the commands of one category of streams. */
export declare class HandlerDefinition<S = any, Commands extends TypeMap = TypeMap, Events extends TypeMap = TypeMap> {
  readonly kind: 'handler';
  readonly name: string;
  readonly category: string;
  readonly description: string;

  /** Folds events of `type` into the state: return the new state, or change it in place. */
  evolve<K extends Names<Events>>(type: K, fn: (state: S, event: StreamEvent<K, Events[K]>) => S | void): this;
  evolve<T>(type: TypedClass<T>, fn: (state: S, event: StreamEvent<string, T>) => S | void): this;
  /** Folds every event type without its own function. */
  evolve(type: '*', fn: (state: S, event: StreamEvent<string, unknown>) => S | void): this;

  /** Decides commands of `type`: the events to append, or `throw new Rejection(reason)`. */
  decide<K extends Names<Commands>>(type: K, fn: (state: S, command: Command<K, Commands[K]>) => Decision<Events>): this;
  decide<T>(type: TypedClass<T>, fn: (state: S, command: Command<string, T>) => Decision<Events>): this;

  describe(): PluginInfo;
}

export interface HandlerOptions<S> {
  /** The plugin's name: 1 to 64 characters from `[a-z0-9-]`, starting with a letter. */
  name: string;
  /** The category of streams it owns (`visit` owns `visit-42`). */
  category: string;
  /** One line for operators. */
  description?: string;
  /** The state of a stream without events: a JSON value, or a function returning one (default `{}`). */
  initialState?: S | (() => S);
}

/** Defines a command handler. */
export declare function handler<S = any, Commands extends TypeMap = TypeMap, Events extends TypeMap = TypeMap>(
  options: HandlerOptions<S>,
): HandlerDefinition<S, Commands, Events>;

// ----- projections and policies ---------------------------------------------------------------

/** A recorded event, as projections and policies receive it. */
export declare class Envelope<K extends string = string, D = unknown> {
  /** Position in the global log: 1-based, gapless, increasing. */
  readonly position: number;
  /** The stream's name (`visit-42`). */
  readonly stream: string;
  /** Version within the stream. */
  readonly version: number;
  /** The event's id. */
  readonly id: string;
  /** The event type. */
  readonly type: K;
  /** The event's data: parsed JSON, or an instance of its typed class. */
  readonly data: D;
  /** The event's metadata. */
  readonly metadata: JsonObject;
  /** When it was recorded: RFC 3339 in UTC with microseconds. */
  readonly recordedAt: string;
  /** When it was recorded, in milliseconds since the Unix epoch (microseconds floored). */
  readonly recordedAtMs: number;
  /** The part of the stream's name after the first `-` (`42` for `visit-42`). */
  readonly entityId: string;
  /** The stream's category (`visit` for `visit-42`). */
  readonly category: string;
  /** The correlation id in the metadata, if any. */
  readonly correlationId: string | undefined;
  /** The causation id in the metadata, if any. */
  readonly causationId: string | undefined;
  /** The event's data as the recorded JSON text. */
  readonly dataJson: string;
}

/** The read-only state a query sees. */
export interface StateView {
  /** The value under `key`, parsed; `fallback` if absent. */
  get<T = any>(key: string): T | undefined;
  get<T = any>(key: string, fallback: T): T;
  /** Whether `key` holds a value. */
  has(key: string): boolean;
  /** Every entry whose key starts with `prefix`, in key order (paged internally). */
  scan<T = any>(prefix: string, options?: { after?: string }): Generator<[string, T]>;
}

/** The key-value state of a projection or a policy during one call. */
export declare class State implements StateView {
  get<T = any>(key: string): T | undefined;
  get<T = any>(key: string, fallback: T): T;
  has(key: string): boolean;
  scan<T = any>(prefix: string, options?: { after?: string }): Generator<[string, T]>;
  /** Stores `value` (as JSON) under `key`. */
  put(key: string, value: unknown): void;
  /** Removes `key`. */
  delete(key: string): void;
}

/** A query's parameters, read like `URLSearchParams`. */
export declare class Params implements Iterable<[string, string]> {
  get(name: string): string | undefined;
  getAll(name: string): string[];
  has(name: string): boolean;
  /** The first value of `name`, or a failure saying it is missing. */
  required(name: string): string;
  entries(): IterableIterator<[string, string]>;
  [Symbol.iterator](): IterableIterator<[string, string]>;
  readonly size: number;
}

export interface SubscriberOptions {
  /** The plugin's name: 1 to 64 characters from `[a-z0-9-]`, starting with a letter. */
  name: string;
  /** One line for operators. */
  description?: string;
  /** The stream categories to receive; empty or absent: every category. */
  categories?: string[];
  /** The event types to receive; absent: those with an `.on` function (every type with `'*'`). */
  eventTypes?: string[];
}

/** A projection: a key-value read model folded from the log. */
export declare class ProjectionDefinition<Events extends TypeMap = TypeMap> {
  readonly kind: 'projection';
  readonly name: string;
  readonly description: string;
  readonly categories: string[];
  readonly eventTypes: string[];

  /** Applies events of `type` to the state. */
  on<K extends Names<Events>>(type: K, fn: (state: State, event: Envelope<K, Events[K]>) => void): this;
  on<T>(type: TypedClass<T>, fn: (state: State, event: Envelope<string, T>) => void): this;
  on(type: '*', fn: (state: State, event: Envelope<string, unknown>) => void): this;

  /** Answers `GET /projections/{name}/query/{path}` (`'*'`: any other path); a throw is the caller's 400. */
  query(path: string, fn: (state: StateView, params: Params, path: string) => unknown): this;

  describe(): PluginInfo;
}

/** Defines a projection. */
export declare function projection<Events extends TypeMap = TypeMap>(options: SubscriberOptions): ProjectionDefinition<Events>;

/** A due timer. */
export declare class Timer<P = any> {
  readonly key: string;
  /** The payload given to `schedule`, parsed. */
  readonly payload: P;
  readonly payloadJson: string;
}

/** A command the policy sent that was rejected. */
export declare class RejectedCommand<D = any> {
  readonly id: string;
  readonly stream: string;
  readonly type: string;
  readonly data: D;
  readonly metadata: JsonObject;
  readonly dataJson: string;
  readonly entityId: string;
}

/** What a policy asks the host to do. */
export type Action =
  | { readonly kind: 'send'; readonly handler: string; readonly stream: string; readonly commandType: string; readonly data: unknown }
  | { readonly kind: 'schedule'; readonly key: string; readonly dueMs: number; readonly payload: unknown }
  | { readonly kind: 'cancelTimer'; readonly key: string };

/** What a policy function returns: actions (an array, one, or none). */
export type Actions = Action[] | Action | void;

/** A policy: reacts to events, timers and rejected commands with actions. */
export declare class PolicyDefinition<Events extends TypeMap = TypeMap> {
  readonly kind: 'policy';
  readonly name: string;
  readonly description: string;
  readonly categories: string[];
  readonly eventTypes: string[];

  on<K extends Names<Events>>(type: K, fn: (state: State, event: Envelope<K, Events[K]>) => Actions): this;
  on<T>(type: TypedClass<T>, fn: (state: State, event: Envelope<string, T>) => Actions): this;
  on(type: '*', fn: (state: State, event: Envelope<string, unknown>) => Actions): this;
  onTimer(fn: (state: State, timer: Timer) => Actions): this;
  onRejected(fn: (state: State, command: RejectedCommand, reason: string) => Actions): this;

  describe(): PluginInfo;
}

/** Defines a policy. */
export declare function policy<Events extends TypeMap = TypeMap>(options: SubscriberOptions): PolicyDefinition<Events>;

/** Sends a command to a handler. */
export declare function send(handler: string, stream: string, commandType: string | TypedClass, data?: unknown): Action;
/** Sends a typed class's instance as a command. */
export declare function send(handler: string, stream: string, command: object): Action;
/** Sets (or moves) the timer `key`, due at `dueMs` (milliseconds since the epoch). */
export declare function schedule(key: string, dueMs: number | bigint, payload?: unknown): Action;
/** Cancels the timer `key`. */
export declare function cancelTimer(key: string): Action;

// ----- shared ---------------------------------------------------------------------------------

/** What a plugin says about itself at deploy time. */
export interface PluginInfo {
  name: string;
  kind: 'handler' | 'projection' | 'policy';
  category: string | undefined;
  categories: string[];
  eventTypes: string[];
  description: string;
}

/** A handler's refusal of a command; the reason goes back to the caller (HTTP 422). */
export declare class Rejection extends Error {
  constructor(reason: string);
  readonly reason: string;
}

/** A failure whose message is shown as it is. */
export declare class Failure extends Error {
  constructor(message: string);
}

/** Data that does not fit its typed class. */
export declare class DataMismatch extends Error {
  constructor(message: string);
}

/** Checks that `data` is an object holding each of `names`, for a typed class's constructor. */
export declare function expectFields<T>(data: T, ...names: string[]): T;

/** Log lines in the host's log. */
export declare const log: {
  trace(message: string): void;
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
};

/** Milliseconds since the epoch of an RFC 3339 timestamp (digits beyond the millisecond dropped). */
export declare function millisFromRfc3339(text: string): number;
/** The RFC 3339 UTC timestamp, with microseconds, of `millis` since the epoch. */
export declare function rfc3339FromMillis(millis: number): string;
/** The part of a stream's name after the first `-`. */
export declare function entityIdOf(stream: string): string;
/** The part of a stream's name before the first `-`. */
export declare function categoryOf(stream: string): string;
