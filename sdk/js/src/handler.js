/**
 * Command handlers (deciders): `handler({...})` defines one, `.evolve(type, fn)` folds each event
 * type into the state, `.decide(type, fn)` turns each command type into events or a `Rejection`.
 *
 * `evolveWire` and `decideWire` are the wire-level paths: the state as UTF-8 JSON bytes, events
 * and commands as type names with JSON text. The component's exports and `@evhost/sdk/testing`
 * both run them, so a test exercises what the host will.
 * @module
 */

import { Rejection, Failure, errorReport } from './errors.js';
import { Command } from './envelope.js';
import { write } from './log.js';
import { checkCategory, checkPluginName, checkTypeName } from './names.js';
import { PLUGIN } from './plugin.js';
import { TypeRegistry, decodeData, typedInstance, typeNameOf } from './types.js';

/** @type {WeakMap<HandlerDefinition, {initialState: () => unknown, evolvers: TypeRegistry, deciders: TypeRegistry}>} */
const internals = new WeakMap();

/** A command handler, built with `handler({...})`. */
export class HandlerDefinition {
  /**
   * @param {{name: string, category: string, description?: string, initialState?: unknown}} options
   *   `initialState`: the state of a stream without events, a JSON value or a function that
   *   returns one (default `{}`).
   */
  constructor({ name, category, description = '', initialState = {} }) {
    checkPluginName(name);
    checkCategory(category);
    /** @readonly */
    this.kind = 'handler';
    /** @readonly */
    this.name = name;
    /** @readonly */
    this.category = category;
    /** @readonly */
    this.description = String(description);
    internals.set(this, {
      initialState: initialStateFactory(name, initialState),
      evolvers: new TypeRegistry('evolve'),
      deciders: new TypeRegistry('decide'),
    });
  }

  /**
   * Folds events of `type` (a name, a typed class, or `'*'` for every type without its own
   * function) into the state: `fn(state, event)` returns the new state, or changes `state` in
   * place and returns nothing. An event type with no function is a failure of the handler.
   */
  evolve(type, fn) {
    internals.get(this).evolvers.add(type, fn);
    return this;
  }

  /**
   * Decides commands of `type` (a name or a typed class): `fn(state, command)` returns the events
   * to append (`{type, data, metadata?}` objects or typed class instances; an array, one event,
   * or nothing), or throws a `Rejection`.
   */
  decide(type, fn) {
    internals.get(this).deciders.add(type, fn);
    return this;
  }

  /** What the handler says about itself at deploy time. */
  describe() {
    return {
      name: this.name,
      kind: 'handler',
      category: this.category,
      categories: [],
      eventTypes: [],
      description: this.description,
    };
  }

  get [PLUGIN]() {
    return 'handler';
  }
}

/** Defines a command handler. */
export function handler(options) {
  return new HandlerDefinition(options);
}

function initialStateFactory(name, initialState) {
  if (typeof initialState === 'function') return initialState;
  // Kept as text so that no call can change the initial state of the next one.
  const text = JSON.stringify(initialState);
  if (text === undefined) throw new TypeError(`handler ${name}: initialState is not a JSON value`);
  return () => JSON.parse(text);
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Folds a batch of events (`{type, version, data}` with data as JSON text) into the state stored
 * as `stateBytes` (undefined before the stream's first event) and returns the new state's bytes.
 * Throws (after logging it) on any failure: an event type without a function, data that does not
 * fit its class, an error in a function.
 * @param {HandlerDefinition} definition
 * @param {Uint8Array | undefined} stateBytes
 * @param {Array<{type: string, version: number, data: string}>} events
 * @returns {Uint8Array}
 */
export function evolveWire(definition, stateBytes, events) {
  const { evolvers } = internals.get(definition);
  try {
    let state = loadState(definition, stateBytes);
    events.forEach((event, index) => {
      const entry = evolvers.lookup(event.type);
      if (entry === undefined) {
        throw new Failure(
          `handler ${definition.name}: event ${index} of the batch has the unknown type ${event.type}; ` +
            `expected one of ${evolvers.names().join(', ')} (register .evolve('*', fn) to fold other types)`,
        );
      }
      const data = decodeEventData(definition, entry, event, index);
      const next = entry.fn(state, { type: event.type, version: Number(event.version), data, dataJson: event.data });
      if (next !== undefined) state = next;
    });
    const text = JSON.stringify(state === undefined ? null : state);
    return encoder.encode(text);
  } catch (error) {
    write('error', `handler ${definition.name}: evolve failed: ${errorReport(error)}`);
    throw error;
  }
}

function decodeEventData(definition, entry, event, index) {
  try {
    return decodeData(entry, JSON.parse(event.data));
  } catch (error) {
    throw new Failure(
      `handler ${definition.name}: event ${index} of the batch, of type ${event.type}, does not match: ${error.message}`,
    );
  }
}

/**
 * Decides a command (`{id, stream, type, data, metadata}`, data and metadata as JSON text)
 * against the state stored as `stateBytes`. Returns `{events}` in the wire form the handler world
 * returns (`{eventType, data, metadata}`, JSON text), or `{rejection}` with the reason. Throws
 * (after logging it) on a failure of the handler: anything thrown that is not a `Rejection`.
 * @param {HandlerDefinition} definition
 * @param {Uint8Array | undefined} stateBytes
 * @param {{id: string, stream: string, type: string, data: string, metadata: string}} wire
 * @returns {{events: Array<{eventType: string, data: string, metadata: string | undefined}>} | {rejection: string}}
 */
export function decideWire(definition, stateBytes, wire) {
  const { deciders } = internals.get(definition);
  try {
    const state = loadState(definition, stateBytes);
    const entry = deciders.lookup(wire.type);
    if (entry === undefined) {
      return { rejection: `unknown command type ${wire.type}; expected one of ${deciders.names().join(', ')}` };
    }
    let data;
    try {
      data = decodeData(entry, JSON.parse(wire.data));
    } catch (error) {
      return { rejection: `${wire.type} data does not match: ${error.message}` };
    }
    let decided;
    try {
      decided = entry.fn(state, new Command(wire, data));
    } catch (error) {
      if (error instanceof Rejection) return { rejection: error.reason };
      throw error;
    }
    return { events: toArray(decided).map((event) => encodeEvent(definition, event)) };
  } catch (error) {
    write('error', `handler ${definition.name}: ${wire.type} failed: ${errorReport(error)}`);
    throw error;
  }
}

function toArray(decided) {
  if (decided === undefined || decided === null) return [];
  return Array.isArray(decided) ? decided : [decided];
}

function encodeEvent(definition, event) {
  const typed = typedInstance(event);
  let type;
  let data;
  let metadata;
  if (typed) {
    ({ type, data } = typed);
  } else if (event !== null && typeof event === 'object' && !Array.isArray(event) && event.type !== undefined) {
    type = typeNameOf(event.type);
    data = event.data === undefined ? null : event.data;
    metadata = event.metadata;
  } else {
    throw new Failure(
      `handler ${definition.name}: decide returned ${safeJson(event)}; expected {type, data, metadata?} or a typed class's instance`,
    );
  }
  try {
    checkTypeName(type);
  } catch (error) {
    throw new Failure(`handler ${definition.name}: ${error.message}`);
  }
  const dataText = JSON.stringify(data);
  if (dataText === undefined) {
    throw new Failure(`handler ${definition.name}: the data of event ${type} is not a JSON value`);
  }
  if (metadata !== undefined && (metadata === null || typeof metadata !== 'object' || Array.isArray(metadata))) {
    throw new Failure(`handler ${definition.name}: the metadata of event ${type} is not an object`);
  }
  return { eventType: type, data: dataText, metadata: metadata === undefined ? undefined : JSON.stringify(metadata) };
}

function loadState(definition, stateBytes) {
  if (stateBytes === undefined || stateBytes === null) return internals.get(definition).initialState();
  try {
    return JSON.parse(decoder.decode(stateBytes));
  } catch (error) {
    throw new Failure(
      `handler ${definition.name}: the stream's state (${stateBytes.length} bytes) cannot be decoded: ${error.message}`,
    );
  }
}

function safeJson(value) {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
