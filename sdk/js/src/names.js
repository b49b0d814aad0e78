/**
 * The naming rules the host checks at deploy time, checked here when a plugin is defined, so a
 * mistake shows up in the author's tests and at build time instead of at deploy time.
 * @module
 */

/** The longest plugin name, in characters. */
const MAX_NAME_CHARS = 64;
/** The longest category, in bytes of UTF-8. */
const MAX_CATEGORY_BYTES = 128;
/** The longest event or command type name, in characters. */
const MAX_TYPE_NAME_CHARS = 128;

const PLUGIN_NAME = /^[a-z][a-z0-9-]*$/;
const TYPE_NAME = /^[A-Za-z0-9_.:-]+$/;
// C0 controls, DEL and the C1 controls: the host refuses them in a category.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/** Throws unless `name` is 1 to 64 characters from `[a-z0-9-]`, starting with a letter. */
export function checkPluginName(name) {
  if (typeof name !== 'string' || name.length > MAX_NAME_CHARS || !PLUGIN_NAME.test(name)) {
    throw new TypeError(
      `plugin name ${JSON.stringify(name)} is not 1 to ${MAX_NAME_CHARS} characters from [a-z0-9-] starting with a letter`,
    );
  }
}

/** Throws unless `category` is 1 to 128 bytes without `-` (which ends a category in a stream's name) or control characters. */
export function checkCategory(category) {
  const valid =
    typeof category === 'string' &&
    category.length > 0 &&
    new TextEncoder().encode(category).length <= MAX_CATEGORY_BYTES &&
    !category.includes('-') &&
    !CONTROL.test(category);
  if (!valid) {
    throw new TypeError(
      `category ${JSON.stringify(category)} is not 1 to ${MAX_CATEGORY_BYTES} bytes without '-' or control characters`,
    );
  }
}

/** Whether `name` is an event or command type the host accepts: 1 to 128 characters from `[A-Za-z0-9_.:-]`. */
export function isTypeName(name) {
  return typeof name === 'string' && name.length <= MAX_TYPE_NAME_CHARS && TYPE_NAME.test(name);
}

/** Throws unless `name` is a valid event or command type name. */
export function checkTypeName(name) {
  if (!isTypeName(name)) {
    throw new TypeError(
      `type name ${JSON.stringify(name)} is not 1 to ${MAX_TYPE_NAME_CHARS} characters from [A-Za-z0-9_.:-]`,
    );
  }
}

/** The part of a stream's name after its category and the first `-` (`42` for `visit-42`); empty without a `-`. */
export function entityIdOf(stream) {
  const dash = stream.indexOf('-');
  return dash < 0 ? '' : stream.slice(dash + 1);
}

/** The stream's category: its name up to the first `-` (`visit` for `visit-42`). */
export function categoryOf(stream) {
  const dash = stream.indexOf('-');
  return dash < 0 ? stream : stream.slice(0, dash);
}
