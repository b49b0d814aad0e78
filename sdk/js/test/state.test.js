/**
 * The state helper over a host with the host's rules (a scan serves at most 1000 entries):
 * paging through every entry, reads that see the call's own writes, and calls that fail writing
 * nothing.
 */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { Failure, State, projection } from '@evhost/sdk';
import { MemoryState, apply, captureLog, query } from '@evhost/sdk/testing';
import { compareKeys } from '../src/state.js';

const key = (index) => `item/${String(index).padStart(5, '0')}`;

/** A MemoryState that counts the host calls made to it. */
function countingHost(entries) {
  const memory = new MemoryState();
  for (let index = 0; index < entries; index += 1) memory.insert(key(index), { index });
  const calls = { scan: 0, get: 0 };
  const host = {
    get: (k) => (calls.get += 1, memory.get(k)),
    put: (k, v) => memory.put(k, v),
    delete: (k) => memory.delete(k),
    scan: (prefix, after, limit) => {
      calls.scan += 1;
      const page = memory.scan(prefix, after, limit);
      assert.ok(page.length <= 1000, 'the host serves at most 1000 entries per scan');
      return page;
    },
  };
  return { memory, host, calls };
}

describe('state', () => {
  it('scans every entry, paging past the host cap of 1000', () => {
    const { host, calls } = countingHost(2500);
    const state = new State(host);
    const seen = [...state.scan('item/')];
    assert.equal(seen.length, 2500);
    assert.deepEqual(seen[0], [key(0), { index: 0 }]);
    assert.deepEqual(seen[2499], [key(2499), { index: 2499 }]);
    assert.ok(seen.every(([k], index) => k === key(index)), 'in key order, each once');
    assert.equal(calls.scan, 3);
  });

  it('scans after a key and within a prefix only', () => {
    const { host } = countingHost(1500);
    host.put('other', '1');
    const state = new State(host);
    const seen = [...state.scan('item/', { after: key(1200) })];
    assert.equal(seen.length, 299);
    assert.equal(seen[0][0], key(1201));
  });

  it("sees the call's own writes in gets and in scans across pages", () => {
    const { host, memory } = countingHost(2001);
    const state = new State(host);
    state.delete(key(5));
    state.put(key(999), 'changed');
    state.put(`${key(1500)}x`, 'added in the second page');
    state.put('item/zzz', 'added after the last page');
    assert.equal(state.get(key(5)), undefined);
    assert.equal(state.get(key(5), 'fallback'), 'fallback');
    assert.equal(state.get(key(999)), 'changed');
    const seen = new Map(state.scan('item/'));
    assert.equal(seen.size, 2001 - 1 + 2);
    assert.equal(seen.has(key(5)), false);
    assert.equal(seen.get(key(999)), 'changed');
    assert.equal(seen.get(`${key(1500)}x`), 'added in the second page');
    assert.equal(seen.get('item/zzz'), 'added after the last page');
    const keys = [...seen.keys()];
    assert.deepEqual(keys, [...keys].sort(compareKeys));
    assert.deepEqual(memory.value(key(999)), { index: 999 }, 'nothing reaches the host before the commit');
    state.commit();
    assert.equal(memory.value(key(999)), 'changed');
    assert.equal(memory.get(key(5)), undefined);
  });

  it('parses values afresh on every read, so changing one changes nothing until put back', () => {
    const { host } = countingHost(1);
    const state = new State(host);
    state.get(key(0)).index = 42;
    assert.deepEqual(state.get(key(0)), { index: 0 });
  });

  it('orders keys as the host does, by UTF-8 bytes', () => {
    const keys = ['b', '\u{1f600}', '\uffff', 'a', 'ab', '\ue000'];
    assert.deepEqual(keys.sort(compareKeys), ['a', 'ab', 'b', '\ue000', '\uffff', '\u{1f600}']);
  });

  it('writes nothing when the call fails', () => {
    const tally = projection({ name: 'tally' })
      .on('Counted', (state) => state.put('count', state.get('count', 0) + 1))
      .on('Broken', () => {
        throw new Error('broken on purpose');
      });
    const memory = new MemoryState();
    const captured = captureLog();
    assert.throws(() =>
      apply(tally, memory, [
        { position: 1, stream: 'a-1', type: 'Counted' },
        { position: 2, stream: 'a-1', type: 'Broken' },
      ]),
    );
    captured.stop();
    assert.equal(memory.size, 0);
    apply(tally, memory, [
      { position: 1, stream: 'a-1', type: 'Counted' },
      { position: 2, stream: 'a-1', type: 'Counted' },
    ]);
    assert.equal(memory.value('count'), 2);
    assert.equal(memory.writeCount, 1, 'a key written twice in a batch reaches the host once');
  });

  it('refuses writes during a query', () => {
    const sneaky = projection({ name: 'sneaky' }).query('write', (state) => state.put('k', 1));
    assert.throws(() => query(sneaky, new MemoryState(), 'write'), new Failure('the state is read-only in a query'));
  });

  it('refuses values the host would refuse', () => {
    const state = new State(new MemoryState());
    assert.throws(() => state.put('', 1), /state key "" is not a non-empty string/);
    assert.throws(() => state.put('k', undefined), /undefined is not a JSON value/);
    assert.throws(() => state.put('x'.repeat(1025), 1), /state key is 1025 bytes; expected 1 to 1024/);
  });
});
