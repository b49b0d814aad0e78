/**
 * Policies and their actions: what `send`, `schedule` and `cancelTimer` make and refuse, the wire
 * form the policy world returns, and a policy (the hostile fixture) run through react, a timer and
 * a rejection.
 */

import '../test-support/register.js';

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { cancelTimer, policy, schedule, send } from '@evhost/sdk';
import { MemoryState, captureLog, fire, react, reject } from '@evhost/sdk/testing';
import { fromWitAction, toWitAction } from '../src/actions.js';

const { default: hostilePolicy } = await import('../../../tests/fixtures/js/hostile-policy/hostile_policy.js');

class PrepareSurvey {
  constructor({ visit_id }) {
    this.visit_id = visit_id;
  }
}

describe('actions', () => {
  it('are plain values a test can compare', () => {
    assert.deepEqual(send('survey', 'survey-7', 'PrepareSurvey', { visit_id: '7' }), {
      kind: 'send',
      handler: 'survey',
      stream: 'survey-7',
      commandType: 'PrepareSurvey',
      data: { visit_id: '7' },
    });
    assert.deepEqual(schedule('remind/7', 1000n, { visit: '7' }), { kind: 'schedule', key: 'remind/7', dueMs: 1000, payload: { visit: '7' } });
    assert.deepEqual(cancelTimer('remind/7'), { kind: 'cancelTimer', key: 'remind/7' });
    assert.equal(send('survey', 'survey-7', 'Noop').data, null);
  });

  it('take typed classes and instances', () => {
    assert.equal(send('survey', 'survey-7', PrepareSurvey, { visit_id: '7' }).commandType, 'PrepareSurvey');
    const typed = send('survey', 'survey-7', new PrepareSurvey({ visit_id: '7' }));
    assert.equal(typed.commandType, 'PrepareSurvey');
    assert.deepEqual(toWitAction(typed).val.data, '{"visit_id":"7"}');
  });

  it('refuse what the host would refuse', () => {
    assert.throws(() => send('Survey', 's-1', 'X'), /plugin name "Survey"/);
    assert.throws(() => send('survey', '', 'X'), /stream "" is not a non-empty string/);
    assert.throws(() => send('survey', 's-1', 'no spaces'), /type name "no spaces"/);
    assert.throws(() => schedule('k', -1), /dueMs -1 is not a whole number/);
    assert.throws(() => schedule('k', 1.5), /dueMs 1.5 is not a whole number/);
    assert.throws(() => cancelTimer(''), /timer key "" is not a non-empty string/);
    assert.throws(() => send('survey', 's-1', 'X', { big: 1n }), /BigInt/);
  });

  it('have the wire form of the policy world, and back', () => {
    const actions = [send('counter', 'counter-1', 'Increment', { by: 1 }), schedule('t', 5, 'p'), cancelTimer('t')];
    const wire = actions.map(toWitAction);
    assert.deepEqual(wire, [
      { tag: 'send', val: { handler: 'counter', streamId: 'counter-1', commandType: 'Increment', data: '{"by":1}' } },
      { tag: 'schedule', val: { key: 't', dueMs: 5n, payload: '"p"' } },
      { tag: 'cancel-timer', val: 't' },
    ]);
    assert.deepEqual(wire.map(fromWitAction), actions);
  });
});

describe('policy', () => {
  it('reacts, fires its timers and hears of rejections (the hostile fixture)', () => {
    const memory = new MemoryState();
    assert.deepEqual(react(hostilePolicy, memory, { position: 5, stream: 'hostile-7', type: 'Hello', data: { x: 1 } }), [
      send('counter', 'counter-7', 'Increment', { by: 1 }),
    ]);
    const [timer] = react(hostilePolicy, memory, {
      position: 6,
      stream: 'hostile-2',
      type: 'Schedule',
      data: { delay_ms: 1500 },
      recordedAt: '2026-11-23T19:35:53.000000Z',
    });
    assert.deepEqual(timer, schedule('timer/00000000000000000006', 1_795_462_554_500, { stream: 'counter-2' }));
    const [command] = fire(hostilePolicy, memory, timer);
    assert.deepEqual(command, send('counter', 'counter-2', 'Increment', { by: 1 }));
    assert.deepEqual(reject(hostilePolicy, memory, command, 'limit reached'), []);
    assert.deepEqual(memory.toObject(), {
      'fired/timer/00000000000000000006': { stream: 'counter-2' },
      'rejected/rejected-1': { command_type: 'Increment', stream: 'counter-2', reason: 'limit reached' },
      'seen/00000000000000000005': { x: 1 },
      'seen/00000000000000000006': { delay_ms: 1500 },
    });
  });

  it('fails on a poison event and keeps none of its writes', () => {
    const memory = new MemoryState();
    const captured = captureLog();
    assert.throws(() => react(hostilePolicy, memory, { position: 9, stream: 'hostile-1', type: 'Poison' }), {
      message: 'poison event at position 9',
    });
    captured.stop();
    assert.equal(memory.size, 0);
    assert.match(captured.lines[0].message, /^policy hostile-policy-js: react to position 9 \(Poison\) failed: Error: poison event/);
  });

  it('subscribes to the types it has functions for, unless told otherwise', () => {
    const typed = policy({ name: 'typed', categories: ['visit'] }).on('B', () => []).on('A', () => []);
    assert.deepEqual(typed.describe(), {
      name: 'typed',
      kind: 'policy',
      category: undefined,
      categories: ['visit'],
      eventTypes: ['A', 'B'],
      description: '',
    });
    assert.deepEqual(hostilePolicy.describe().eventTypes, [], "'*' subscribes to every type");
    assert.deepEqual(policy({ name: 'given', eventTypes: ['X'] }).on('A', () => []).eventTypes, ['X']);
  });

  it('logs timers and rejections it has no function for', () => {
    const plain = policy({ name: 'plain' }).on('A', () => undefined);
    const captured = captureLog();
    assert.deepEqual(fire(plain, new MemoryState(), { key: 't', payload: 1 }), []);
    assert.deepEqual(reject(plain, new MemoryState(), send('x', 'x-1', 'Go'), 'no'), []);
    captured.stop();
    assert.deepEqual(captured.lines, [
      { level: 'warn', message: 'policy plain has no onTimer; timer t ignored' },
      { level: 'warn', message: 'policy plain: Go on x-1 was rejected: no' },
    ]);
  });

  it('fails when a function returns something that is not an action', () => {
    const sloppy = policy({ name: 'sloppy' }).on('A', () => [{ send: 'x' }]);
    const captured = captureLog();
    assert.throws(() => react(sloppy, new MemoryState(), { position: 1, stream: 'a-1', type: 'A' }), /expected actions made by send, schedule or cancelTimer/);
    captured.stop();
  });
});
