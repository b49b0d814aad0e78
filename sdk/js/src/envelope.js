/**
 * What plugin functions receive besides the state: recorded events in their envelope (position,
 * stream, version, id, type, data, metadata, time), commands, due timers, rejected commands and
 * a query's parameters. Each is built from the host's wire records, whose JSON text is parsed
 * here once.
 * @module
 */

import { Failure } from './errors.js';
import { categoryOf, entityIdOf } from './names.js';
import { millisFromRfc3339 } from './time.js';

/** Parses the JSON text of a metadata object; empty text is an empty object. */
function parseMetadata(text) {
  return text ? JSON.parse(text) : {};
}

/** A recorded event, as a projection or a policy receives it. */
export class Envelope {
  /**
   * @param {object} wire the host's event record (`position`, `streamId`, `version`, `id`,
   *   `eventType`, `data`, `metadata`, `recordedAt`)
   * @param {unknown} data the event's data, parsed (and decoded into its typed class, if any)
   */
  constructor(wire, data) {
    /** Position in the global log: 1-based, gapless, increasing. */
    this.position = Number(wire.position);
    /** The stream's name (`visit-42`). */
    this.stream = wire.streamId;
    /** Version within the stream: 1-based and contiguous. */
    this.version = Number(wire.version);
    /** The event's id, unique in the store. */
    this.id = wire.id;
    /** The event type (`PatientCheckedIn`). */
    this.type = wire.eventType;
    /** The event's data: parsed JSON, or an instance of the typed class registered for it. */
    this.data = data;
    /** The event's metadata: a parsed JSON object (`correlation_id`, `causation_id`, ...). */
    this.metadata = parseMetadata(wire.metadata);
    /** When the event was recorded: RFC 3339 in UTC with microseconds. */
    this.recordedAt = wire.recordedAt;
    /** The event's data as the JSON text the host recorded. */
    this.dataJson = wire.data;
  }

  /** When the event was recorded, in milliseconds since the Unix epoch (microseconds floored). */
  get recordedAtMs() {
    return millisFromRfc3339(this.recordedAt);
  }

  /** The part of the stream's name after its category and the first `-` (`42` for `visit-42`). */
  get entityId() {
    return entityIdOf(this.stream);
  }

  /** The stream's category (`visit` for `visit-42`). */
  get category() {
    return categoryOf(this.stream);
  }

  /** The id shared by everything one request caused, if the metadata has one. */
  get correlationId() {
    return this.metadata?.correlation_id ?? this.metadata?.['correlation-id'];
  }

  /** The id of what caused this event (the command, for events a command appended), if known. */
  get causationId() {
    return this.metadata?.causation_id ?? this.metadata?.['causation-id'];
  }
}

/** A command, as a handler's `decide` function receives it. */
export class Command {
  /**
   * @param {{id: string, stream: string, type: string, data: string, metadata: string}} wire
   * @param {unknown} data the command's data, parsed (and decoded into its typed class, if any)
   */
  constructor(wire, data) {
    /** The command's id: the host records the outcome under it. */
    this.id = wire.id;
    /** The stream the command is about (`survey-1001`). */
    this.stream = wire.stream;
    /** The command type (`PrepareSurvey`). */
    this.type = wire.type;
    /** The command's data: parsed JSON, or an instance of the typed class registered for it. */
    this.data = data;
    /** The command's metadata: a parsed JSON object. */
    this.metadata = parseMetadata(wire.metadata);
    /** The command's data as the JSON text it was sent with. */
    this.dataJson = wire.data;
  }

  /** The part of the stream's name after its category and the first `-` (`1001` for `survey-1001`). */
  get entityId() {
    return entityIdOf(this.stream);
  }
}

/** A timer of a policy that is due. */
export class Timer {
  /** @param {string} key @param {string} payloadJson */
  constructor(key, payloadJson) {
    /** The timer's key, as scheduled. */
    this.key = key;
    /** The payload as the JSON text the timer carries. */
    this.payloadJson = payloadJson;
  }

  /** The payload given to `schedule`, parsed. */
  get payload() {
    try {
      return JSON.parse(this.payloadJson);
    } catch (error) {
      throw new Failure(`the payload of timer ${this.key} is not JSON: ${error.message}`);
    }
  }
}

/** A command a policy sent that its handler rejected, as `onRejected` receives it. */
export class RejectedCommand {
  /** @param {{id: string, streamId: string, commandType: string, data: string, metadata: string}} wire */
  constructor(wire) {
    /** The command's id (the host derives it from what the policy reacted to). */
    this.id = wire.id;
    /** The stream the command was about. */
    this.stream = wire.streamId;
    /** The command type. */
    this.type = wire.commandType;
    /** The command's data, parsed. */
    this.data = JSON.parse(wire.data);
    /** The command's metadata, parsed. */
    this.metadata = parseMetadata(wire.metadata);
    /** The command's data as JSON text. */
    this.dataJson = wire.data;
  }

  /** The part of the stream's name after its category and the first `-`. */
  get entityId() {
    return entityIdOf(this.stream);
  }
}

/**
 * A query's parameters: the request's query string, decoded, in order, without the host's own
 * (`min_position`, `timeout_ms`, `version`). Read like `URLSearchParams`.
 */
export class Params {
  #pairs;

  /** @param {Array<[string, string]>} pairs */
  constructor(pairs) {
    this.#pairs = pairs.map(([name, value]) => [String(name), String(value)]);
  }

  /** The first value of `name`, or undefined. */
  get(name) {
    return this.#pairs.find(([key]) => key === name)?.[1];
  }

  /** Every value of `name`, in order. */
  getAll(name) {
    return this.#pairs.filter(([key]) => key === name).map(([, value]) => value);
  }

  /** Whether `name` is given. */
  has(name) {
    return this.#pairs.some(([key]) => key === name);
  }

  /** The first value of `name`, or a `Failure` saying it is missing (the caller sees it). */
  required(name) {
    const value = this.get(name);
    if (value === undefined) throw new Failure(`parameter ${name} is missing`);
    return value;
  }

  /** Every `[name, value]`, in the request's order. */
  entries() {
    return this.#pairs.map((pair) => [...pair])[Symbol.iterator]();
  }

  [Symbol.iterator]() {
    return this.entries();
  }

  /** How many parameters there are. */
  get size() {
    return this.#pairs.length;
  }
}
