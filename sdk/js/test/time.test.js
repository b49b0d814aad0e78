/** Timestamps: the host's RFC 3339 text with microseconds, parsed without `Date.parse`. */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { millisFromRfc3339, projection, rfc3339FromMillis } from '@evhost/sdk';
import { MemoryState, apply } from '@evhost/sdk/testing';

describe('time', () => {
  it("parses the host's timestamps, flooring microseconds", () => {
    assert.equal(millisFromRfc3339('1970-01-01T00:00:00.000000Z'), 0);
    assert.equal(millisFromRfc3339('2026-12-02T03:22:37.123456Z'), 1_796_181_757_123);
    assert.equal(millisFromRfc3339('2026-12-02T03:22:37.123999Z'), 1_796_181_757_123);
    assert.equal(millisFromRfc3339('2000-02-29T23:59:59.999999Z'), 951_868_799_999);
    assert.equal(millisFromRfc3339('2026-11-23T19:35:53Z'), 1_795_462_553_000);
    assert.equal(millisFromRfc3339('2026-11-23T20:35:53.1+01:00'), 1_795_462_553_100);
  });

  it('refuses what is not a timestamp', () => {
    for (const text of ['', '2026-11-23', '2026-11-23T19:35:53', '2026-13-01T00:00:00Z', '2026-02-29T00:00:00Z',
      '2026-11-23T24:00:00Z', '2026-11-23T19:35:53.Z', '1969-12-31T23:59:59Z', '2026-11-23T19:35:53Zjunk']) {
      assert.throws(() => millisFromRfc3339(text), /is not RFC 3339/, text);
    }
  });

  it('formats with microseconds and parses back', () => {
    assert.equal(rfc3339FromMillis(1_795_462_553_123), '2026-11-23T19:35:53.123000Z');
    for (const millis of [0, 1, 999, 951_868_799_999, 1_795_462_553_123, 4_102_444_800_000]) {
      assert.equal(millisFromRfc3339(rfc3339FromMillis(millis)), millis);
    }
  });

  it('gives each event its recordedAtMs', () => {
    const seen = [];
    const times = projection({ name: 'times' }).on('*', (state, event) => seen.push([event.recordedAt, event.recordedAtMs]));
    apply(times, new MemoryState(), [{ position: 1, stream: 'a-1', type: 'X', recordedAt: '2026-12-02T03:22:37.999999Z' }]);
    assert.deepEqual(seen, [['2026-12-02T03:22:37.999999Z', 1_796_181_757_999]]);
  });
});
