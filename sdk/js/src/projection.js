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
import { State } from './state.js';
import { SubscriberDefinition, dispatch } from './subscriber.js';
import { ANY_TYPE } from './types.js';

/** @type {WeakMap<ProjectionDefinition, {queries: Map<string, Function>}>} */
const internals = new WeakMap();

/**
 * A projection, built with `projection({...})`. Its `.on(type, fn)` functions apply events:
 * `fn(state, event)`, with the projection's `State` and the event's `Envelope`.
 */
export class ProjectionDefinition extends SubscriberDefinition {
  /**
   * @param {{name: string, description?: string, categories?: string[], eventTypes?: string[]}} options
   *   as `SubscriberDefinition` describes them.
   */
  constructor(options) {
    super('projection', options);
    internals.set(this, { queries: new Map() });
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
  const state = new State(backend);
  let current;
  try {
    for (const wire of events) {
      current = wire;
      const call = dispatch(definition, wire);
      if (call === undefined) continue;
      call.fn(state, call.envelope);
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
