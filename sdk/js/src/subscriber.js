/**
 * What projections and policies share: `SubscriberDefinition`, the base of their definitions,
 * with their options, their subscription (categories and event types, the event types defaulting
 * to those they have functions for), the functions registered per event type with `.on`, and how
 * a host event record becomes the `Envelope` its function gets.
 * @module
 */

import { Failure } from './errors.js';
import { Envelope } from './envelope.js';
import { checkCategory, checkPluginName, checkTypeName } from './names.js';
import { PLUGIN } from './plugin.js';
import { TypeRegistry, decodeData } from './types.js';

/** @type {WeakMap<SubscriberDefinition, {eventTypes: string[] | undefined, functions: TypeRegistry}>} */
const internals = new WeakMap();

/** A projection or a policy: see `ProjectionDefinition` and `PolicyDefinition`. */
export class SubscriberDefinition {
  /**
   * @param {'projection' | 'policy'} kind
   * @param {{name: string, description?: string, categories?: string[], eventTypes?: string[]}} options
   *   `categories`: the stream categories to receive (default: every category); `eventTypes`:
   *   the event types to receive (default: those with an `.on` function).
   */
  constructor(kind, options) {
    const { name, description, categories, eventTypes } = subscriberOptions(kind, options);
    /** @readonly */
    this.kind = kind;
    /** @readonly */
    this.name = name;
    /** @readonly */
    this.description = description;
    /** @readonly */
    this.categories = categories;
    internals.set(this, { eventTypes, functions: new TypeRegistry('on') });
  }

  /**
   * Registers `fn(state, event)` for events of `type` (a name, a typed class, or `'*'` for every
   * type without its own function); what it returns is for the kind to say.
   */
  on(type, fn) {
    internals.get(this).functions.add(type, fn);
    return this;
  }

  /**
   * The event types it receives: those it names, else those it has functions for (every type,
   * `[]`, once it has a function for `'*'`).
   */
  get eventTypes() {
    const { eventTypes, functions } = internals.get(this);
    if (eventTypes !== undefined) return [...eventTypes];
    return functions.catchesAll ? [] : functions.names();
  }

  /** What it says about itself at deploy time. */
  describe() {
    return {
      name: this.name,
      kind: this.kind,
      category: undefined,
      categories: [...this.categories],
      eventTypes: this.eventTypes,
      description: this.description,
    };
  }

  get [PLUGIN]() {
    return this.kind;
  }
}

/**
 * Checks a projection's or policy's options and returns them normalised.
 * @param {string} kind `projection` or `policy`, for messages
 * @param {{name: string, description?: string, categories?: string[], eventTypes?: string[]}} options
 */
function subscriberOptions(kind, { name, description = '', categories = [], eventTypes }) {
  checkPluginName(name);
  if (!Array.isArray(categories)) throw new TypeError(`${kind} ${name}: categories is not an array`);
  categories.forEach(checkCategory);
  if (eventTypes !== undefined) {
    if (!Array.isArray(eventTypes)) throw new TypeError(`${kind} ${name}: eventTypes is not an array`);
    eventTypes.forEach(checkTypeName);
  }
  return {
    name,
    description: String(description),
    categories: [...categories],
    eventTypes: eventTypes === undefined ? undefined : [...eventTypes],
  };
}

/**
 * The function `definition` has for a host event record's type, and the envelope it gets, with
 * the data decoded by the registration's class; undefined if no function takes the event.
 * @param {SubscriberDefinition} definition
 * @returns {{fn: Function, envelope: Envelope} | undefined}
 * @throws {Failure} naming the plugin and the event when the data does not fit
 */
export function dispatch(definition, wire) {
  const entry = internals.get(definition).functions.lookup(wire.eventType);
  if (entry === undefined) return undefined;
  let data;
  try {
    data = decodeData(entry, JSON.parse(wire.data));
  } catch (error) {
    throw new Failure(
      `${definition.kind} ${definition.name}: the event at position ${wire.position}, of type ${wire.eventType}, does not match: ${error.message}`,
    );
  }
  return { fn: entry.fn, envelope: new Envelope(wire, data) };
}
