/**
 * The WebAssembly glue against a fake host: what each world's exports return and throw. In the
 * component a thrown string becomes the export's `err` and anything else a trap, so a handler's
 * failure must be thrown as an Error and every error the host should see as `err` as a string.
 */

import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';

import { Failure, Rejection, handler, log, policy, projection, send } from '@evhost/sdk';
import { MemoryState } from '@evhost/sdk/testing';
import { exportHandler, exportPolicy, exportProjection } from '@evhost/sdk/guest';
import { setLogSink } from '../src/log.js';

let lines;
let originalConsole;
let originalSink;
const write = (level, message) => lines.push([level, message]);

beforeEach(() => {
  lines = [];
  originalConsole = globalThis.console;
  originalSink = setLogSink(() => {});
});

afterEach(() => {
  globalThis.console = originalConsole;
  setLogSink(originalSink);
});

/** What an export threw: `{err}` for a string (the component's err), `{trap}` for anything else. */
function outcome(call) {
  try {
    return { ok: call() };
  } catch (thrown) {
    return typeof thrown === 'string' ? { err: thrown } : { trap: thrown };
  }
}

const visit = handler({ name: 'visit', category: 'visit', initialState: { in: false } })
  .evolve('CheckedIn', () => ({ in: true }))
  .evolve('Poison', () => {
    throw new Error('poisoned');
  })
  .decide('CheckIn', (state) => {
    if (state.in) throw new Rejection('already in');
    console.log('checking in', { at: 1 });
    log.debug('decided');
    return [{ type: 'CheckedIn', data: { at: 1 } }];
  })
  .decide('Crash', () => {
    throw 'a thrown string is a failure, not a rejection';
  });

const command = (type) => ({ id: 'c-1', streamId: 'visit-1', commandType: type, data: '{}', metadata: '{}' });

describe('guest glue', () => {
  it('handler: events, rejections as err, failures as traps', () => {
    const exports = exportHandler(visit, { write });
    assert.deepEqual(exports.meta.describe().name, 'visit');
    assert.deepEqual(outcome(() => exports.decide(undefined, command('CheckIn'))), {
      ok: [{ eventType: 'CheckedIn', data: '{"at":1}', metadata: undefined }],
    });
    const state = exports.evolve(undefined, ['CheckedIn'], [{ version: 1n, typeIndex: 0, data: '{"at":1}' }]);
    assert.equal(new TextDecoder().decode(state), '{"in":true}');
    assert.deepEqual(outcome(() => exports.decide(state, command('CheckIn'))), { err: 'already in' });
    assert.deepEqual(outcome(() => exports.decide(state, command('Nope'))), {
      err: 'unknown command type Nope; expected one of CheckIn, Crash',
    });
    const crash = outcome(() => exports.decide(undefined, command('Crash')));
    assert.ok(crash.trap instanceof Error, 'a failure in decide traps');
    assert.equal(crash.trap.message, 'a thrown string is a failure, not a rejection');
    assert.deepEqual(outcome(() => exports.evolve(undefined, ['Poison'], [{ version: 1n, typeIndex: 0, data: '{}' }])), {
      err: 'Error: poisoned',
    });
  });

  it('routes console and the log to the host', () => {
    const exports = exportHandler(visit, { write });
    exports.decide(undefined, command('CheckIn'));
    console.error(new Failure('shown'));
    assert.deepEqual(lines.slice(0, 2), [
      ['info', 'checking in {"at":1}'],
      ['debug', 'decided'],
    ]);
    assert.equal(lines[2][0], 'error');
    assert.match(lines[2][1], /^Failure: shown/);
  });

  it('projection: apply errors and query errors as err', () => {
    const memory = new MemoryState();
    const counts = projection({ name: 'counts' })
      .on('Counted', (state) => state.put('n', state.get('n', 0) + 1))
      .on('Broken', (state, event) => {
        throw new Error(`broken at ${event.position}`);
      })
      .query('n', (state) => state.get('n', 0));
    const exports = exportProjection(counts, { write, state: memory });
    const event = (position, type) => ({
      position: BigInt(position),
      streamId: 'a-1',
      version: BigInt(position),
      id: `e-${position}`,
      eventType: type,
      data: '{}',
      metadata: '{}',
      recordedAt: '2026-12-02T03:22:37.123456Z',
    });
    assert.deepEqual(outcome(() => exports.apply([event(1, 'Counted'), event(2, 'Counted')])), { ok: undefined });
    assert.deepEqual(outcome(() => exports.query('n', [])), { ok: '2' });
    assert.deepEqual(outcome(() => exports.apply([event(3, 'Broken')])), { err: 'Error: broken at 3' });
    assert.deepEqual(outcome(() => exports.query('m', [])), { err: 'unknown query m; expected one of n' });
    assert.equal(lines[0][0], 'error');
    assert.match(lines[0][1], /^projection counts: apply failed at position 3 \(Broken\): Error: broken at 3/);
  });

  it('policy: actions in wire form, errors as err', () => {
    const memory = new MemoryState();
    const relay = policy({ name: 'relay' })
      .on('Ping', (state, event) => send('pong', `pong-${event.entityId}`, 'Pong', { at: event.recordedAtMs }))
      .onTimer(() => {
        throw new Failure('no timers here');
      });
    const exports = exportPolicy(relay, { write, state: memory });
    const ping = {
      position: 1n,
      streamId: 'ping-4',
      version: 1n,
      id: 'e-1',
      eventType: 'Ping',
      data: 'null',
      metadata: '{}',
      recordedAt: '2026-12-02T03:22:37.123456Z',
    };
    assert.deepEqual(exports.react(ping), [
      { tag: 'send', val: { handler: 'pong', streamId: 'pong-4', commandType: 'Pong', data: '{"at":1796181757123}' } },
    ]);
    assert.deepEqual(outcome(() => exports.onTimer('t', '{}')), { err: 'no timers here' });
    assert.deepEqual(exports.onRejected({ id: 'x', streamId: 'pong-4', commandType: 'Pong', data: '{}', metadata: '{}' }, 'no'), []);
  });

  it('refuses a plugin of another kind', () => {
    assert.throws(() => exportProjection(visit, { write }), /expected a projection definition as the module's default export, found handler/);
  });
});
