/**
 * Log lines in the host's log, tagged there with the plugin's name and version.
 *
 * In a component the guest glue points the sink at the `log.write` import (and routes `console.*`
 * here too); natively (tests) lines go to standard error as `[level] message`, unless a test
 * captures them.
 * @module
 */

/** @typedef {'trace' | 'debug' | 'info' | 'warn' | 'error'} Level */

/** Where lines go: natively, standard error. */
let sink = (level, message) => {
  console.error(`[${level}] ${message}`);
};

/**
 * Replaces where lines go and returns the previous sink. Not part of the public API: the guest
 * glue and `@evhost/sdk/testing` use it.
 * @param {(level: Level, message: string) => void} next
 */
export function setLogSink(next) {
  const previous = sink;
  sink = next;
  return previous;
}

/** Writes one line at `level`. */
export function write(level, message) {
  sink(level, String(message));
}

/** Log lines in the host's log: `log.info('visit 42 checked in')`. */
export const log = Object.freeze({
  /** Writes a step-by-step detail. */
  trace: (message) => write('trace', message),
  /** Writes a detail for diagnosing. */
  debug: (message) => write('debug', message),
  /** Writes a normal event worth a line. */
  info: (message) => write('info', message),
  /** Writes something unexpected that the plugin handled. */
  warn: (message) => write('warn', message),
  /** Writes something that failed. */
  error: (message) => write('error', message),
});

/**
 * The text of a `console.log` call's arguments, close to what Node prints: strings as they are,
 * errors with their stack, other values as JSON.
 * @param {unknown[]} args
 */
export function formatConsoleArgs(args) {
  return args.map(formatValue).join(' ');
}

function formatValue(value) {
  if (typeof value === 'string') return value;
  if (value instanceof Error) return value.stack ? `${value.name}: ${value.message}\n${value.stack}` : `${value.name}: ${value.message}`;
  if (value === undefined || typeof value === 'function' || typeof value === 'symbol') return String(value);
  if (typeof value === 'bigint') return `${value}n`;
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
