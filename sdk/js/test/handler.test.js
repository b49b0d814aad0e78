/**
 * Handlers through the wire-level paths the component runs: typed dispatch by type name and by
 * class, rejections against failures, the messages for unknown command types and data that does
 * not fit, and how decided events are encoded.
 */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { Rejection, expectFields, handler } from '@evhost/sdk';
import { captureLog, decide, evolve } from '@evhost/sdk/testing';
import { decideWire } from '../src/handler.js';

class Admit {
  constructor(data) {
    const { ward } = expectFields(data, 'ward');
    this.ward = ward;
  }
}

class Admitted {
  constructor({ ward }) {
    this.ward = ward;
  }
}

const ward = () =>
  handler({ name: 'ward', category: 'ward', description: 'Admissions', initialState: { admitted: [] } })
    .evolve(Admitted, (state, event) => {
      state.admitted.push(event.data.ward);
    })
    .evolve('Discharged', (state) => ({ admitted: state.admitted.slice(1) }))
    .decide(Admit, (state, command) => {
      if (state.admitted.includes(command.data.ward)) throw new Rejection(`already admitted to ${command.data.ward}`);
      return [new Admitted({ ward: command.data.ward })];
    })
    .decide('Discharge', (state, command) => {
      if (state.admitted.length === 0) throw new Rejection('nobody to discharge');
      return { type: 'Discharged', data: command.data, metadata: { reason: 'done' } };
    })
    .decide('Crash', () => {
      throw new TypeError('cannot read the chart');
    });

/** Collects log lines while `call` runs, so expected failures do not clutter the test output. */
function quietly(call) {
  const captured = captureLog();
  try {
    return { result: call(), lines: captured.lines };
  } catch (error) {
    return { error, lines: captured.lines };
  } finally {
    captured.stop();
  }
}

describe('handler', () => {
  it('dispatches commands and events by type name and by typed class', () => {
    const plugin = ward();
    const events = decide(plugin, { type: 'Admit', data: { ward: 'cardio', extra: true } });
    assert.deepEqual(events, [{ type: 'Admitted', data: { ward: 'cardio' } }]);
    const state = evolve(plugin, events);
    assert.deepEqual(state, { admitted: ['cardio'] });
    assert.deepEqual(decide(plugin, { type: 'Discharge', data: { why: 'well' } }, state), [
      { type: 'Discharged', data: { why: 'well' }, metadata: { reason: 'done' } },
    ]);
    assert.deepEqual(evolve(plugin, [{ type: 'Discharged', data: null }], state), { admitted: [] });
  });

  it('accepts a typed class instance as the command', () => {
    assert.deepEqual(decide(ward(), new Admit({ ward: 'icu' })), [{ type: 'Admitted', data: { ward: 'icu' } }]);
  });

  it('rejects with the reason a Rejection gives', () => {
    const plugin = ward();
    assert.throws(() => decide(plugin, { type: 'Discharge', data: {} }), new Rejection('nobody to discharge'));
    const state = { admitted: ['icu'] };
    assert.throws(() => decide(plugin, { type: 'Admit', data: { ward: 'icu' } }, state), {
      name: 'Rejection',
      message: 'already admitted to icu',
    });
  });

  it('rejects an unknown command type, naming the known ones in order', () => {
    const decision = decideWire(ward(), undefined, { id: 'c', stream: 'ward-1', type: 'Transfer', data: '{}', metadata: '{}' });
    assert.deepEqual(decision, { rejection: 'unknown command type Transfer; expected one of Admit, Crash, Discharge' });
  });

  it('rejects data that does not fit the typed class', () => {
    assert.throws(() => decide(ward(), { type: 'Admit', data: { room: 3 } }), {
      message: 'Admit data does not match: missing field `ward`',
    });
    assert.throws(() => decide(ward(), { type: 'Admit', data: null }), {
      message: 'Admit data does not match: expected an object, found null',
    });
  });

  it('treats any other error as a failure of the plugin, logged at error level', () => {
    const { error, lines } = quietly(() => decide(ward(), { type: 'Crash', data: {} }));
    assert.ok(error instanceof TypeError, 'the error is thrown as it is, not as a rejection');
    assert.equal(lines.length, 1);
    assert.equal(lines[0].level, 'error');
    assert.match(lines[0].message, /^handler ward: Crash failed: TypeError: cannot read the chart\n/);
  });

  it('fails evolve on an event type it has no function for', () => {
    const { error } = quietly(() => evolve(ward(), [{ type: 'Transferred', data: {} }]));
    assert.match(error.message, /event 0 of the batch has the unknown type Transferred; expected one of Admitted, Discharged/);
  });

  it("folds every other type with '*'", () => {
    const counting = handler({ name: 'counting', category: 'counting', initialState: 0 }).evolve('*', (n) => n + 1);
    assert.equal(evolve(counting, [{ type: 'A' }, { type: 'B' }, { type: 'C' }]), 3);
  });

  it('starts every stream from a fresh copy of the initial state', () => {
    const plugin = ward();
    evolve(plugin, [{ type: 'Admitted', data: { ward: 'a' } }]);
    assert.deepEqual(evolve(plugin, []), { admitted: [] });
  });

  it('fails on an event it cannot encode', () => {
    const bad = handler({ name: 'bad', category: 'bad' }).decide('Go', () => [{ type: 'has space', data: {} }]);
    const { error } = quietly(() => decide(bad, { type: 'Go' }));
    assert.match(error.message, /type name "has space" is not 1 to 128 characters/);
  });

  it('refuses invalid names when the plugin is defined', () => {
    assert.throws(() => handler({ name: 'Ward', category: 'ward' }), /plugin name "Ward" is not 1 to 64 characters/);
    assert.throws(() => handler({ name: 'ward', category: 'ward-x' }), /category "ward-x" is not/);
    assert.throws(() => ward().decide('Admit', () => []), /Admit is registered twice/);
  });

  it('describes itself', () => {
    assert.deepEqual(ward().describe(), {
      name: 'ward',
      kind: 'handler',
      category: 'ward',
      categories: [],
      eventTypes: [],
      description: 'Admissions',
    });
  });
});
