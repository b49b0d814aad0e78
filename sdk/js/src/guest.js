/**
 * The WebAssembly glue: the exports of the `handler`, `projection` and `policy` worlds for a
 * plugin definition, over the `evhost:plugin/*` imports. The entry module that `evhost-js build`
 * generates imports the author's plugin and the host's interfaces and hands them to one of the
 * functions here. Not a stable API.
 *
 * In componentize-js, a string thrown from an export whose result is `result<_, string>` becomes
 * its `err`, and anything else thrown traps. The glue relies on both: a handler's rejection and
 * every other error the host should see as an error are thrown as strings, while a failure in
 * `decide` (whose `err` means "rejected") is thrown as an `Error`, so the host sees a trap and
 * reports the plugin as failed.
 * @module
 */

import { errorText, messageOf } from './errors.js';
import { formatConsoleArgs, setLogSink } from './log.js';
import { pluginKind } from './plugin.js';
import { decideWire, evolveWire } from './handler.js';
import { applyWire, queryWire } from './projection.js';
import { onRejectedWire, onTimerWire, reactWire } from './policy.js';

/** `console` methods and the host log level each writes at. */
const CONSOLE_LEVELS = { log: 'info', info: 'info', debug: 'debug', trace: 'trace', warn: 'warn', error: 'error' };

/**
 * Sends the SDK's log and `console.*` to the host's `log.write`. The component has no standard
 * output (WASI's stdio is left out), so without this `console.log` would print nowhere.
 */
function connectLog(hostWrite) {
  setLogSink((level, message) => hostWrite(level, message));
  const routed = {};
  for (const [method, level] of Object.entries(CONSOLE_LEVELS)) {
    routed[method] = (...args) => hostWrite(level, formatConsoleArgs(args));
  }
  globalThis.console = { ...globalThis.console, ...routed };
}

function expectKind(plugin, kind) {
  const found = pluginKind(plugin);
  if (found !== kind) {
    throw new TypeError(`expected a ${kind} definition as the module's default export, found ${found ?? typeof plugin}`);
  }
}

/** The plugin's `describe`, as the meta interface returns it. */
function metaOf(plugin) {
  return { describe: () => plugin.describe() };
}

/**
 * The exports of the handler world.
 * @param {import('./handler.js').HandlerDefinition} plugin
 * @param {{write: Function}} host
 */
export function exportHandler(plugin, host) {
  expectKind(plugin, 'handler');
  connectLog(host.write);
  return {
    meta: metaOf(plugin),
    evolve(state, eventTypes, events) {
      try {
        const batch = events.map((event) => {
          const type = eventTypes[event.typeIndex];
          if (type === undefined) {
            throw new Error(
              `event version ${event.version} names type ${event.typeIndex} of a batch of ${eventTypes.length} types`,
            );
          }
          return { type, version: Number(event.version), data: event.data };
        });
        return evolveWire(plugin, state, batch);
      } catch (error) {
        // evolve's err is a plugin failure to the host, with this text.
        throw errorText(error);
      }
    },
    decide(state, command) {
      let decision;
      try {
        decision = decideWire(plugin, state, {
          id: command.id,
          stream: command.streamId,
          type: command.commandType,
          data: command.data,
          metadata: command.metadata,
        });
      } catch (error) {
        // decide's err means "rejected": a failure must trap instead, which a thrown Error does.
        throw error instanceof Error ? error : new Error(errorText(error));
      }
      if ('rejection' in decision) throw decision.rejection;
      return decision.events;
    },
  };
}

/**
 * The exports of the projection world.
 * @param {import('./projection.js').ProjectionDefinition} plugin
 * @param {{write: Function, state: import('./state.js').StateBackend}} host
 */
export function exportProjection(plugin, host) {
  expectKind(plugin, 'projection');
  connectLog(host.write);
  return {
    meta: metaOf(plugin),
    apply(events) {
      try {
        applyWire(plugin, host.state, events);
      } catch (error) {
        throw errorText(error);
      }
    },
    query(path, params) {
      try {
        return queryWire(plugin, host.state, path, params);
      } catch (error) {
        throw messageOf(error);
      }
    },
  };
}

/**
 * The exports of the policy world.
 * @param {import('./policy.js').PolicyDefinition} plugin
 * @param {{write: Function, state: import('./state.js').StateBackend}} host
 */
export function exportPolicy(plugin, host) {
  expectKind(plugin, 'policy');
  connectLog(host.write);
  const asError = (call) => {
    try {
      return call();
    } catch (error) {
      throw errorText(error);
    }
  };
  return {
    meta: metaOf(plugin),
    react: (event) => asError(() => reactWire(plugin, host.state, event)),
    onTimer: (key, payload) => asError(() => onTimerWire(plugin, host.state, key, payload)),
    onRejected: (command, reason) => asError(() => onRejectedWire(plugin, host.state, command, reason)),
  };
}
