/**
 * The key-value state of a projection or a policy, as plugin functions use it: JSON values under
 * string keys, over the host's `state` interface (`get`, `put`, `delete`, `scan` on JSON text).
 *
 * A `State` lives for one call (a batch of events for a projection, one event, timer or
 * rejection for a policy). It keeps what it read and what was written as JSON text, so reads see
 * the writes made before them, `scan` included, and hands each written key to the host once,
 * when the call ends well; a call that fails writes nothing. Values are parsed on every read, so
 * changing a value read from the state changes nothing until it is `put` back.
 * @module
 */

import { Failure } from './errors.js';

/** Most entries the host returns from one `scan` call. */
export const HOST_SCAN_PAGE = 1000;
/** Longest key the host stores, in bytes of UTF-8. */
export const MAX_KEY_BYTES = 1024;

/**
 * @typedef {object} StateBackend The host's `state` interface, or an in-memory stand-in.
 * @property {(key: string) => string | undefined} get
 * @property {(key: string, value: string) => void} put
 * @property {(key: string) => void} delete
 * @property {(prefix: string, after: string | undefined, limit: number) => Array<[string, string]>} scan
 */

/**
 * Orders keys as the host does: by their UTF-8 bytes, which is code point order. JavaScript's
 * `<` compares UTF-16 code units, which puts characters above U+FFFF before U+E000..U+FFFF.
 */
export function compareKeys(a, b) {
  if (a === b) return 0;
  const length = Math.min(a.length, b.length);
  for (let index = 0; index < length; index += 1) {
    const x = a.charCodeAt(index);
    const y = b.charCodeAt(index);
    if (x === y) continue;
    const xSurrogate = x >= 0xd800 && x <= 0xdfff;
    const ySurrogate = y >= 0xd800 && y <= 0xdfff;
    if (xSurrogate !== ySurrogate) return xSurrogate ? 1 : -1;
    return x < y ? -1 : 1;
  }
  return a.length - b.length;
}

function checkKey(key) {
  if (typeof key !== 'string' || key.length === 0) {
    throw new TypeError(`state key ${JSON.stringify(key)} is not a non-empty string`);
  }
  const bytes = new TextEncoder().encode(key).length;
  if (bytes > MAX_KEY_BYTES) {
    throw new TypeError(`state key is ${bytes} bytes; expected 1 to ${MAX_KEY_BYTES}`);
  }
}

function parseValue(key, text) {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Failure(`state key ${JSON.stringify(key)} holds text that is not JSON: ${error.message}`);
  }
}

/** The state of a projection or a policy during one call. */
export class State {
  #backend;
  #readOnly;
  /** Keys this call read or wrote: their JSON text (undefined when absent) and whether written. */
  #cache = new Map();

  /**
   * @param {StateBackend} backend
   * @param {{readOnly?: boolean}} [options] read-only: a query's view
   */
  constructor(backend, { readOnly = false } = {}) {
    this.#backend = backend;
    this.#readOnly = readOnly;
  }

  /**
   * The value under `key`, parsed; `fallback` (default undefined) if the key is absent.
   * @param {string} key
   * @param {unknown} [fallback]
   */
  get(key, fallback = undefined) {
    const text = this.#text(key);
    return text === undefined ? fallback : parseValue(key, text);
  }

  /** Whether `key` holds a value. */
  has(key) {
    return this.#text(key) !== undefined;
  }

  /**
   * Stores `value` (anything `JSON.stringify` turns into JSON) under `key`.
   * @param {string} key
   * @param {unknown} value
   */
  put(key, value) {
    this.#checkWritable();
    checkKey(key);
    const text = JSON.stringify(value);
    if (text === undefined) {
      throw new TypeError(`state key ${JSON.stringify(key)}: ${typeof value} is not a JSON value`);
    }
    this.#cache.set(key, { text, written: true });
  }

  /** Removes `key`, if it holds a value. */
  delete(key) {
    this.#checkWritable();
    checkKey(key);
    const known = this.#cache.get(key);
    // Known to be absent since the call began: nothing to tell the host.
    if (known && known.text === undefined && !known.written) return;
    this.#cache.set(key, { text: undefined, written: true });
  }

  /**
   * Every entry whose key starts with `prefix` (after the key `after`, if given), in key order,
   * as `[key, value]` pairs with the values parsed. The host serves at most 1000 entries per
   * call; this pages through all of them. Writes made in this call before a page is fetched are
   * seen.
   * @param {string} prefix
   * @param {{after?: string}} [options]
   * @returns {Generator<[string, unknown]>}
   */
  *scan(prefix, { after } = {}) {
    let cursor = after;
    for (;;) {
      const page = this.#backend.scan(prefix, cursor, HOST_SCAN_PAGE);
      const exhausted = page.length < HOST_SCAN_PAGE;
      // The page holds every stored key after the cursor up to its last key; within that window
      // what this call read or wrote overrides what is stored.
      const upper = exhausted ? undefined : page[page.length - 1][0];
      const window = new Map();
      for (const [key, text] of page) {
        if (!this.#cache.has(key)) window.set(key, text);
      }
      for (const [key, { text }] of this.#cache) {
        const inWindow =
          key.startsWith(prefix) &&
          (cursor === undefined || compareKeys(key, cursor) > 0) &&
          (upper === undefined || compareKeys(key, upper) <= 0);
        if (inWindow && text !== undefined) window.set(key, text);
      }
      for (const key of [...window.keys()].sort(compareKeys)) {
        yield [key, parseValue(key, window.get(key))];
      }
      if (exhausted) return;
      cursor = upper;
    }
  }

  /** Hands the keys written in this call to the host, in key order. Called once, when the call ended well. */
  commit() {
    const written = [...this.#cache].filter(([, entry]) => entry.written);
    written.sort(([a], [b]) => compareKeys(a, b));
    for (const [key, { text }] of written) {
      if (text === undefined) this.#backend.delete(key);
      else this.#backend.put(key, text);
    }
  }

  #text(key) {
    const known = this.#cache.get(key);
    if (known) return known.text;
    const text = this.#backend.get(key) ?? undefined;
    this.#cache.set(key, { text, written: false });
    return text;
  }

  #checkWritable() {
    if (this.#readOnly) throw new Failure('the state is read-only in a query');
  }
}
