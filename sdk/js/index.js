/**
 * `@evhost/sdk`: write evhost plugins in JavaScript and build them into WebAssembly components.
 *
 * - A **handler** (`handler({...})`) owns one category of streams. For each command, the host
 *   folds the stream's events into a state with the `.evolve(type, fn)` functions, then asks the
 *   `.decide(type, fn)` function of the command's type for the events to append, or a
 *   `Rejection`.
 * - A **projection** (`projection({...})`) folds the events it subscribes to into a key-value
 *   read model with `.on(type, fn)`, and answers `.query(path, fn)`.
 * - A **policy** (`policy({...})`) reacts to events, timers and rejected commands with actions:
 *   `send`, `schedule`, `cancelTimer`.
 *
 * A plugin module `export default`s its definition; `evhost-js build plugin.js -o plugin.wasm`
 * turns it into a component, and `@evhost/sdk/testing` runs it natively with in-memory state.
 * @module
 */

export { handler, HandlerDefinition } from './src/handler.js';
export { projection, ProjectionDefinition } from './src/projection.js';
export { policy, PolicyDefinition } from './src/policy.js';
export { send, schedule, cancelTimer } from './src/actions.js';
export { Rejection, Failure, DataMismatch } from './src/errors.js';
export { log } from './src/log.js';
export { expectFields } from './src/types.js';
export { Envelope, Command, Timer, RejectedCommand, Params } from './src/envelope.js';
export { State } from './src/state.js';
export { millisFromRfc3339, rfc3339FromMillis } from './src/time.js';
export { entityIdOf, categoryOf } from './src/names.js';
