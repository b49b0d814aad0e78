/**
 * What a policy asks the host to do: send a command, set a timer, cancel a timer. The helpers
 * check their arguments when the action is made, so a mistake points at the line that made it;
 * `toWitAction` is the wire form the policy world returns.
 * @module
 */

import { checkPluginName, checkTypeName } from './names.js';
import { typeNameOf, typedInstance } from './types.js';

function jsonText(value, what) {
  const text = JSON.stringify(value === undefined ? null : value);
  if (text === undefined) throw new TypeError(`${what} is not a JSON value`);
  return text;
}

/**
 * Sends a command to a handler: `send('survey', 'survey-1001', 'PrepareSurvey', {visit_id})`.
 * The command type may be a typed class, or the data a typed class's instance with the type left
 * out: `send('survey', 'survey-1001', new PrepareSurvey({...}))`.
 * @param {string} handler the handler's name
 * @param {string} stream the stream the command is about
 * @param {string | Function | object} commandType
 * @param {unknown} [data] JSON data; `null` if left out
 */
export function send(handler, stream, commandType, data) {
  checkPluginName(handler);
  if (typeof stream !== 'string' || stream.length === 0) {
    throw new TypeError(`send: stream ${JSON.stringify(stream)} is not a non-empty string`);
  }
  const typed = data === undefined ? typedInstance(commandType) : undefined;
  const type = typed ? typed.type : typeNameOf(commandType);
  checkTypeName(type);
  const payload = typed ? typed.data : (data ?? null);
  jsonText(payload, `the data of ${type}`);
  return Object.freeze({ kind: 'send', handler, stream, commandType: type, data: payload });
}

/**
 * Sets (or moves) the timer `key`, due at `dueMs` milliseconds since the Unix epoch; `onTimer`
 * gets `payload` back. Time inside a plugin is frozen: derive `dueMs` from `event.recordedAtMs`.
 * @param {string} key
 * @param {number | bigint} dueMs
 * @param {unknown} [payload] JSON; `null` if left out
 */
export function schedule(key, dueMs, payload) {
  checkTimerKey(key);
  const due = typeof dueMs === 'bigint' ? Number(dueMs) : dueMs;
  if (!Number.isSafeInteger(due) || due < 0) {
    throw new TypeError(`schedule: dueMs ${String(dueMs)} is not a whole number of milliseconds since 1970`);
  }
  const value = payload === undefined ? null : payload;
  jsonText(value, `the payload of timer ${key}`);
  return Object.freeze({ kind: 'schedule', key, dueMs: due, payload: value });
}

/** Cancels the timer `key`, if it is set. */
export function cancelTimer(key) {
  checkTimerKey(key);
  return Object.freeze({ kind: 'cancelTimer', key });
}

function checkTimerKey(key) {
  if (typeof key !== 'string' || key.length === 0) {
    throw new TypeError(`timer key ${JSON.stringify(key)} is not a non-empty string`);
  }
}

/**
 * The wire form of an action, as the policy world returns it.
 * @throws {TypeError} for anything that is not an action made by `send`, `schedule` or `cancelTimer`
 */
export function toWitAction(action) {
  switch (action?.kind) {
    case 'send':
      return {
        tag: 'send',
        val: {
          handler: action.handler,
          streamId: action.stream,
          commandType: action.commandType,
          data: jsonText(action.data, `the data of ${action.commandType}`),
        },
      };
    case 'schedule':
      return {
        tag: 'schedule',
        val: { key: action.key, dueMs: BigInt(action.dueMs), payload: jsonText(action.payload, 'a payload') },
      };
    case 'cancelTimer':
      return { tag: 'cancel-timer', val: action.key };
    default:
      throw new TypeError(
        `expected actions made by send, schedule or cancelTimer, found ${describe(action)}`,
      );
  }
}

/**
 * The action of a wire action: what a test compares with `send(...)`, `schedule(...)` and
 * `cancelTimer(...)`.
 */
export function fromWitAction(wire) {
  switch (wire.tag) {
    case 'send':
      return send(wire.val.handler, wire.val.streamId, wire.val.commandType, JSON.parse(wire.val.data));
    case 'schedule':
      return schedule(wire.val.key, wire.val.dueMs, JSON.parse(wire.val.payload));
    case 'cancel-timer':
      return cancelTimer(wire.val);
    default:
      throw new TypeError(`unknown action ${wire.tag}`);
  }
}

function describe(value) {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
