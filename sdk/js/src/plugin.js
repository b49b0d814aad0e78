/**
 * The mark every plugin definition carries. It is a registered symbol, so the build tool, which
 * loads the author's bundle with its own copy of the SDK, still recognises a definition and reads
 * its kind.
 * @module
 */

/** The property of a plugin definition that holds its kind (`handler`, `projection`, `policy`). */
export const PLUGIN = Symbol.for('evhost.plugin');

/** The kind of `value` if it is a plugin definition, else undefined. */
export function pluginKind(value) {
  return value !== null && typeof value === 'object' ? value[PLUGIN] : undefined;
}
