/**
 * The outcomes that are not results: a handler's `Rejection` (an expected refusal, shown to the
 * caller), a `Failure` with a message meant to be shown as it is, and `DataMismatch` (data that
 * does not fit a typed class). Anything else a plugin throws is a failure of the plugin.
 * @module
 */

/**
 * A handler's refusal of a command: nothing is appended and the reason goes back to whoever sent
 * it (HTTP 422 `command_rejected`). Throw it from a `decide` function.
 */
export class Rejection extends Error {
  /** @param {string} reason shown to the caller */
  constructor(reason) {
    super(reason);
    this.name = 'Rejection';
  }

  /** The reason shown to the caller. */
  get reason() {
    return this.message;
  }
}

/**
 * A failure whose message is shown as it is (other errors are shown as `Name: message`): a
 * projection paused at an event, a policy's parked event, a query's answer to the caller.
 */
export class Failure extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'Failure';
  }
}

/**
 * Data that does not fit the typed class registered for its type. Thrown by `expectFields`, and
 * by a typed class's constructor if it likes: the SDK reports it as `X data does not match: ...`.
 */
export class DataMismatch extends Error {
  /** @param {string} message what does not fit, e.g. "missing field `room`" */
  constructor(message) {
    super(message);
    this.name = 'DataMismatch';
  }
}

/**
 * How an error reads in a failure: a `Failure`'s message as it is, any other error as
 * `Name: message`, anything else thrown as its text.
 * @param {unknown} error
 * @returns {string}
 */
export function errorText(error) {
  if (error instanceof Failure) return error.message;
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return describeThrown(error);
}

/**
 * What a log line says about an error: its text and, for an `Error` other than a `Failure`, the
 * stack that led to it.
 * @param {unknown} error
 * @returns {string}
 */
export function errorReport(error) {
  const text = errorText(error);
  // A Failure's message says all there is; another error's stack says where it came from.
  const stack =
    error instanceof Error && !(error instanceof Failure) && typeof error.stack === 'string' ? error.stack.trim() : '';
  return stack ? `${text}\n${stack}` : text;
}

/** The message of an error, or the text of anything else thrown. */
export function messageOf(error) {
  return error instanceof Error ? error.message : describeThrown(error);
}

function describeThrown(value) {
  if (typeof value === 'string') return value;
  try {
    return `thrown value ${JSON.stringify(value) ?? String(value)}`;
  } catch {
    return `thrown value ${String(value)}`;
  }
}
