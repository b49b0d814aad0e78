/**
 * Event and command types: registered by name (the data arrives as parsed JSON) or by a typed
 * class (the data arrives as an instance), and matched to what the host hands over by name.
 *
 * A class's type name is its static `type` if it has one, else its name. Data is decoded with
 * `new Class(data)`; whatever the constructor throws means the data does not fit the class.
 * @module
 */

import { DataMismatch } from './errors.js';
import { checkTypeName } from './names.js';

/** The registration that catches every type without one of its own. */
export const ANY_TYPE = '*';

/**
 * The type name of a registration or an action: a string as it is, a class by its static `type`
 * or its name.
 * @param {string | Function} type
 * @returns {string}
 */
export function typeNameOf(type) {
  if (typeof type === 'string') return type;
  if (typeof type === 'function') return typeof type.type === 'string' ? type.type : type.name;
  throw new TypeError(`expected a type name or a class, found ${typeof type}`);
}

/**
 * The data of a value that stands for an event or command: a typed class's instance is its own
 * data, with its class's type name.
 * @returns {{type: string, data: unknown} | undefined} undefined for a plain object
 */
export function typedInstance(value) {
  if (value === null || typeof value !== 'object') return undefined;
  const prototype = Object.getPrototypeOf(value);
  if (prototype === Object.prototype || prototype === null || Array.isArray(value)) return undefined;
  return { type: typeNameOf(value.constructor), data: value };
}

/**
 * Checks that `data` is an object holding each of `names` (a field that is `undefined` is
 * missing; `null` is a value), for the constructor of a typed class, and returns it.
 *
 * ```js
 * class CheckIn {
 *   constructor(data) {
 *     const { patient_id, complaint } = expectFields(data, 'patient_id', 'complaint');
 *     Object.assign(this, { patient_id, complaint });
 *   }
 * }
 * ```
 * @template T
 * @param {T} data
 * @param {...string} names
 * @returns {T}
 */
export function expectFields(data, ...names) {
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    const found = data === null ? 'null' : Array.isArray(data) ? 'an array' : typeof data;
    throw new DataMismatch(`expected an object, found ${found}`);
  }
  for (const name of names) {
    if (data[name] === undefined) throw new DataMismatch(`missing field \`${name}\``);
  }
  return data;
}

/**
 * The functions a plugin registered per type name, with the class (if any) that decodes each
 * type's data.
 */
export class TypeRegistry {
  /** @type {Map<string, {decoder: Function | undefined, fn: Function}>} */
  #entries = new Map();
  #what;

  /** @param {string} what names the registration in errors: `evolve`, `decide`, `on` */
  constructor(what) {
    this.#what = what;
  }

  /** Registers `fn` for `type` (a name, a typed class, or `'*'` for every other type). */
  add(type, fn) {
    if (typeof fn !== 'function') {
      throw new TypeError(`${this.#what}(${JSON.stringify(typeNameOf(type))}, fn): fn is not a function`);
    }
    const name = typeNameOf(type);
    if (name !== ANY_TYPE) checkTypeName(name);
    if (this.#entries.has(name)) {
      throw new TypeError(`${this.#what}: ${name} is registered twice`);
    }
    this.#entries.set(name, { decoder: typeof type === 'function' ? type : undefined, fn });
  }

  /** The registration for `name`, or the one for every other type, or undefined. */
  lookup(name) {
    return this.#entries.get(name) ?? this.#entries.get(ANY_TYPE);
  }

  /** The registered type names, sorted, without `'*'`. */
  names() {
    return [...this.#entries.keys()].filter((name) => name !== ANY_TYPE).sort();
  }

  /** Whether `'*'` is registered. */
  get catchesAll() {
    return this.#entries.has(ANY_TYPE);
  }
}

/**
 * Decodes `data` with the registration's class, if it has one.
 * @throws {DataMismatch} what the constructor threw, as a mismatch
 */
export function decodeData(entry, data) {
  if (entry.decoder === undefined) return data;
  try {
    return new entry.decoder(data);
  } catch (error) {
    throw new DataMismatch(error instanceof Error ? error.message : String(error));
  }
}
