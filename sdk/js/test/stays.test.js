/**
 * The example projection `stays-js` (plugins/js/stays): the parity projection that the Rust
 * `stays` and the Python `stays-py` implement too, with the same keys, values and queries.
 */

import '../test-support/register.js';

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { MemoryState, apply, captureLog, query } from '@evhost/sdk/testing';

const { default: stays } = await import('../../../plugins/js/stays/stays.js');

const checkedIn = (position, visit, recordedAt, hospital) => ({
  position,
  stream: `visit-${visit}`,
  type: 'PatientCheckedIn',
  data: hospital === undefined ? { patient_id: `p-${visit}` } : { patient_id: `p-${visit}`, hospital },
  recordedAt,
});
const checkedOut = (position, visit, recordedAt) => ({
  position,
  stream: `visit-${visit}`,
  type: 'PatientCheckedOut',
  data: { disposition: 'discharged' },
  recordedAt,
});

describe('stays-js', () => {
  it('describes itself as the parity projection', () => {
    assert.deepEqual(stays.describe(), {
      name: 'stays-js',
      kind: 'projection',
      category: undefined,
      categories: ['visit'],
      eventTypes: ['PatientCheckedIn', 'PatientCheckedOut'],
      description: 'Average length of stay per hospital',
    });
  });

  it('averages the stays per hospital, flooring microseconds and the average', () => {
    const memory = new MemoryState();
    const captured = captureLog();
    apply(stays, memory, [
      checkedIn(1, '1', '2026-12-02T03:00:00.000999Z'),
      checkedIn(2, '2', '2026-12-02T03:00:00.000000Z', 'north'),
      checkedIn(3, '3', '2026-12-02T03:00:00.000000Z'),
      checkedOut(4, '1', '2026-12-02T04:00:00.000500Z'),
      checkedOut(5, '3', '2026-12-02T03:00:00.002000Z'),
    ]);
    captured.stop();
    assert.deepEqual(memory.toObject(), {
      'hospital/main': { hospital: 'main', visits: 2, total_stay_ms: 3_600_002, average_stay_ms: 1_800_001 },
      'visit/2': { hospital: 'north', checked_in_ms: 1_796_180_400_000 },
    });
    assert.deepEqual(captured.lines, [
      { level: 'info', message: 'visit 1 at main stayed 3600000 ms' },
      { level: 'info', message: 'visit 3 at main stayed 2 ms' },
    ]);
  });

  it('warns about a check-out without a check-in and changes nothing', () => {
    const memory = new MemoryState();
    const captured = captureLog();
    apply(stays, memory, [checkedOut(1, '9', '2026-12-02T04:00:00.000000Z')]);
    captured.stop();
    assert.equal(memory.size, 0);
    assert.deepEqual(captured.lines, [{ level: 'warn', message: 'visit 9 checked out without a check-in seen' }]);
  });

  it('answers the queries hospitals and hospital', () => {
    const memory = new MemoryState();
    const captured = captureLog();
    apply(stays, memory, [
      checkedIn(1, '1', '2026-12-02T03:00:00.000000Z', 'south'),
      checkedIn(2, '2', '2026-12-02T03:00:00.000000Z', 'north'),
      checkedOut(3, '1', '2026-12-02T03:00:01.000000Z'),
      checkedOut(4, '2', '2026-12-02T03:00:03.000000Z'),
    ]);
    captured.stop();
    const north = { hospital: 'north', visits: 1, total_stay_ms: 3000, average_stay_ms: 3000 };
    const south = { hospital: 'south', visits: 1, total_stay_ms: 1000, average_stay_ms: 1000 };
    assert.deepEqual(query(stays, memory, 'hospitals'), { hospitals: [north, south] });
    assert.deepEqual(query(stays, memory, 'hospital', { name: 'south' }), south);
    assert.throws(() => query(stays, memory, 'hospital', { name: 'east' }), { message: 'no visit has ended at hospital east' });
    assert.throws(() => query(stays, memory, 'hospital'), { message: 'query hospital needs the parameter name' });
    assert.throws(() => query(stays, memory, 'beds'), { message: 'unknown query beds; expected one of hospital, hospitals' });
  });
});
