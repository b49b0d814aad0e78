/**
 * Policies (process managers): react to events, to their timers and to the rejection of the
 * commands they sent, with actions. `policy({...})` defines one; `.on(type, fn)`,
 * `.onTimer(fn)` and `.onRejected(fn)` register what it does.
 *
 * `reactWire`, `onTimerWire` and `onRejectedWire` are the wire-level paths that the component's
 * exports and `@evhost/sdk/testing` both run; they return the actions in the policy world's wire
 * form.
 * @module
 */

import { errorReport } from './errors.js';
import { RejectedCommand, Timer } from './envelope.js';
import { write } from './log.js';
import { State } from './state.js';
import { toWitAction } from './actions.js';
import { SubscriberDefinition, dispatch } from './subscriber.js';

/** @type {WeakMap<PolicyDefinition, {onTimer: Function | undefined, onRejected: Function | undefined}>} */
const internals = new WeakMap();

/**
 * A policy, built with `policy({...})`. Its `.on(type, fn)` functions react to events:
 * `fn(state, event)` returns the actions to take (an array, one action, or nothing).
 */
export class PolicyDefinition extends SubscriberDefinition {
  /**
   * @param {{name: string, description?: string, categories?: string[], eventTypes?: string[]}} options
   *   as `SubscriberDefinition` describes them.
   */
  constructor(options) {
    super('policy', options);
    internals.set(this, { onTimer: undefined, onRejected: undefined });
  }

  /** Reacts to a due timer: `fn(state, timer)` returns actions. Without it, timers are logged and ignored. */
  onTimer(fn) {
    return this.#setOnce('onTimer', fn);
  }

  /**
   * Reacts to a command it sent that was rejected: `fn(state, command, reason)` returns actions.
   * Without it, rejections are logged as warnings.
   */
  onRejected(fn) {
    return this.#setOnce('onRejected', fn);
  }

  #setOnce(what, fn) {
    const registered = internals.get(this);
    if (typeof fn !== 'function') throw new TypeError(`${what}(fn): fn is not a function`);
    if (registered[what] !== undefined) throw new TypeError(`${what} is registered twice`);
    registered[what] = fn;
    return this;
  }
}

/** Defines a policy. */
export function policy(options) {
  return new PolicyDefinition(options);
}

/**
 * Reacts to one host event record with the policy's state in `backend`. Events of a type without
 * a function take no action.
 * @returns {object[]} wire actions
 */
export function reactWire(definition, backend, wire) {
  return run(definition, backend, `react to position ${wire.position} (${wire.eventType})`, (state) => {
    const call = dispatch(definition, wire);
    if (call === undefined) return [];
    return call.fn(state, call.envelope);
  });
}

/** Reacts to the due timer `key` with its payload (JSON text). */
export function onTimerWire(definition, backend, key, payload) {
  const { onTimer } = internals.get(definition);
  return run(definition, backend, `timer ${key}`, (state) => {
    const timer = new Timer(key, payload);
    if (onTimer === undefined) {
      write('warn', `policy ${definition.name} has no onTimer; timer ${key} ignored`);
      return [];
    }
    return onTimer(state, timer);
  });
}

/** Reacts to the rejection of a command it sent (the host's command record) for `reason`. */
export function onRejectedWire(definition, backend, wireCommand, reason) {
  const { onRejected } = internals.get(definition);
  return run(definition, backend, `rejected command ${wireCommand.id}`, (state) => {
    const command = new RejectedCommand(wireCommand);
    if (onRejected === undefined) {
      write('warn', `policy ${definition.name}: ${command.type} on ${command.stream} was rejected: ${reason}`);
      return [];
    }
    return onRejected(state, command, reason);
  });
}

/** Runs one call: the actions in wire form, and the state's writes once it ended well. */
function run(definition, backend, what, call) {
  try {
    const state = new State(backend);
    const returned = call(state);
    const actions = returned === undefined || returned === null ? [] : Array.isArray(returned) ? returned : [returned];
    const wireActions = actions.map(toWitAction);
    state.commit();
    return wireActions;
  } catch (error) {
    write('error', `policy ${definition.name}: ${what} failed: ${errorReport(error)}`);
    throw error;
  }
}
