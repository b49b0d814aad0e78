/**
 * What projections and policies share: their subscription (categories and event types, the
 * event types defaulting to those they have functions for) and how a host event record becomes
 * an `Envelope`.
 * @module
 */

import { Failure } from './errors.js';
import { Envelope } from './envelope.js';
import { checkCategory, checkPluginName, checkTypeName } from './names.js';
import { decodeData } from './types.js';

/**
 * Checks a projection's or policy's options and returns them normalised.
 * @param {string} kind `projection` or `policy`, for messages
 * @param {{name: string, description?: string, categories?: string[], eventTypes?: string[]}} options
 */
export function subscriberOptions(kind, { name, description = '', categories = [], eventTypes }) {
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
 * The event types a subscriber receives: those it names, else those it has functions for (every
 * type, `[]`, once it has a function for `'*'`).
 * @param {string[] | undefined} explicit
 * @param {import('./types.js').TypeRegistry} registry
 */
export function subscribedTypes(explicit, registry) {
  if (explicit !== undefined) return [...explicit];
  return registry.catchesAll ? [] : registry.names();
}

/**
 * The envelope of a host event record, with its data decoded by the registration's class.
 * @throws {Failure} naming the plugin and the event when the data does not fit
 */
export function envelopeOf(plugin, wire, entry) {
  let data;
  try {
    data = decodeData(entry, JSON.parse(wire.data));
  } catch (error) {
    throw new Failure(
      `${plugin}: the event at position ${wire.position}, of type ${wire.eventType}, does not match: ${error.message}`,
    );
  }
  return new Envelope(wire, data);
}
