/**
 * Projections: read models folded from the log into the key-value state. `projection({...})`
 * defines one, `.on(type, fn)` applies each event type, `.query(path, fn)` answers
 * `GET /projections/{name}/query/{path}`.
 *
 * `applyWire` and `queryWire` are the wire-level paths that the component's exports and
 * `@evhost/sdk/testing` both run.
 * @module
 */

import { Failure, errorReport } from './errors.js';
import { Params } from './envelope.js';
import { write } from './log.js';
import { PLUGIN } from './plugin.js';
import { State } from './state.js';
import { envelopeOf, subscribedTypes, subscriberOptions } from './subscriber.js';
import { ANY_TYPE, TypeRegistry } from './types.js';

/** @type {WeakMap<ProjectionDefinition, {eventTypes: string[] | undefined, appliers: TypeRegistry, queries: Map<string, Function>}>} */
const internals = new WeakMap();

/** A projection, built with `projection({...})`. */
export class ProjectionDefinition {
  /**
   * @param {{name: string, description?: string, categories?: string[], eventTypes?: string[]}} options
   *   `categories`: the stream categories to receive (default: every category); `eventTypes`:
   *   the event types to receive (default: those with an `.on` function).
   */
  constructor(options) {
    const { name, description, categories, eventTypes } = subscriberOptions('projection', options);
    /** @readonly */
    this.kind = 'projection';
    /** @readonly */
    this.name = name;
    /** @readonly */
    this.description = description;
    /** @readonly */
    this.categories = categories;
    internals.set(this, { eventTypes, appliers: new TypeRegistry('on'), queries: new Map() });
  }

  /**
   * Applies events of `type` (a name, a typed class, or `'*'` for every type without its own
   * function): `fn(state, event)`, with the projection's `State` and the event's `Envelope`.
   */
  on(type, fn) {
    internals.get(this).appliers.add(type, fn);
    return this;
  }

  /**
   * Answers the query `path` (or `'*'`: every path without its own function):
   * `fn(state, params, path)` returns a JSON value, with a read-only state and the request's
   * `Params`. What it throws is the caller's 400, with the error's message.
   */
  query(path, fn) {
    const { queries } = internals.get(this);
    if (typeof path !== 'string' || path.length === 0) throw new TypeError('query: path is not a non-empty string');
    if (typeof fn !== 'function') throw new TypeError(`query(${JSON.stringify(path)}, fn): fn is not a function`);
    if (queries.has(path)) throw new TypeError(`query: ${path} is registered twice`);
    queries.set(path, fn);
    return this;
  }

  /** The event types the projection receives: as given, or those it has functions for. */
  get eventTypes() {
    const { eventTypes, appliers } = internals.get(this);
    return subscribedTypes(eventTypes, appliers);
  }

  /** What the projection says about itself at deploy time. */
  describe() {
    return {
      name: this.name,
      kind: 'projection',
      category: undefined,
      categories: [...this.categories],
      eventTypes: this.eventTypes,
      description: this.description,
    };
  }

  get [PLUGIN]() {
    return 'projection';
  }
}

/** Defines a projection. */
export function projection(options) {
  return new ProjectionDefinition(options);
}

/**
 * Applies a batch of host event records to the state in `backend`: each event's function in
 * order, then the batch's writes, once. Events of a type without a function are skipped. Throws
 * (after logging it) on any failure; the host then keeps none of the batch's writes.
 * @param {ProjectionDefinition} definition
 * @param {import('./state.js').StateBackend} backend
 * @param {object[]} events host event records
 */
export function applyWire(definition, backend, events) {
  const { appliers } = internals.get(definition);
  const state = new State(backend);
  let current;
  try {
    for (const wire of events) {
      current = wire;
      const entry = appliers.lookup(wire.eventType);
      if (entry === undefined) continue;
      entry.fn(state, envelopeOf(`projection ${definition.name}`, wire, entry));
    }
    current = undefined;
    state.commit();
  } catch (error) {
    const where = current ? ` at position ${current.position} (${current.eventType})` : '';
    write('error', `projection ${definition.name}: apply failed${where}: ${errorReport(error)}`);
    throw error;
  }
}

/**
 * Answers the query `path` with `params` (`[name, value]` pairs) over the read-only state in
 * `backend`: the JSON text of the answer. Throws what the query threw, or a `Failure` for an
 * unknown path.
 * @returns {string}
 */
export function queryWire(definition, backend, path, params) {
  const { queries } = internals.get(definition);
  const fn = queries.get(path) ?? queries.get(ANY_TYPE);
  if (fn === undefined) {
    const known = [...queries.keys()].sort();
    throw new Failure(
      known.length === 0
        ? `unknown query ${path}; projection ${definition.name} has no queries`
        : `unknown query ${path}; expected one of ${known.join(', ')}`,
    );
  }
  const answer = fn(new State(backend, { readOnly: true }), new Params(params), path);
  const text = JSON.stringify(answer === undefined ? null : answer);
  if (text === undefined) throw new Failure(`query ${path} returned something that is not a JSON value`);
  return text;
}
