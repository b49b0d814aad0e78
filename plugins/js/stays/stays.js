/**
 * The projection `stays-js`: the average length of stay per hospital, from the visits' check-ins
 * and check-outs. It is the JavaScript twin of the Rust projection `stays` (and the Python
 * `stays-py`): all three keep the same keys and values and answer the same queries.
 *
 * - `PatientCheckedIn` on `visit-<id>`: `visit/<id>` = `{hospital, checked_in_ms}`.
 * - `PatientCheckedOut` on `visit-<id>`: the stay ends; `visit/<id>` is deleted and
 *   `hospital/<h>` = `{hospital, visits, total_stay_ms, average_stay_ms}` counts it.
 * - query `hospitals`: every hospital's value, in key order; query `hospital?name=<h>`: one.
 */

import { log, projection } from '@evhost/sdk';

/** The hospital of a check-in that names none. */
const DEFAULT_HOSPITAL = 'main';

const visitKey = (visitId) => `visit/${visitId}`;
const hospitalKey = (hospital) => `hospital/${hospital}`;

export default projection({
  name: 'stays-js',
  description: 'Average length of stay per hospital',
  categories: ['visit'],
  eventTypes: ['PatientCheckedIn', 'PatientCheckedOut'],
})
  .on('PatientCheckedIn', (state, event) => {
    state.put(visitKey(event.entityId), {
      hospital: event.data.hospital ?? DEFAULT_HOSPITAL,
      checked_in_ms: event.recordedAtMs,
    });
  })
  .on('PatientCheckedOut', (state, event) => {
    const visitId = event.entityId;
    const visit = state.get(visitKey(visitId));
    if (visit === undefined) {
      log.warn(`visit ${visitId} checked out without a check-in seen`);
      return;
    }
    // Never negative, as in the Rust `stays` (which subtracts with saturation).
    const stayMs = Math.max(0, event.recordedAtMs - visit.checked_in_ms);
    state.delete(visitKey(visitId));
    const { hospital } = visit;
    const stays = state.get(hospitalKey(hospital), { hospital, visits: 0, total_stay_ms: 0, average_stay_ms: 0 });
    const visits = stays.visits + 1;
    const totalStayMs = stays.total_stay_ms + stayMs;
    state.put(hospitalKey(hospital), {
      hospital,
      visits,
      total_stay_ms: totalStayMs,
      average_stay_ms: Math.floor(totalStayMs / visits),
    });
    log.info(`visit ${visitId} at ${hospital} stayed ${stayMs} ms`);
  })
  .query('hospitals', (state) => ({
    hospitals: [...state.scan('hospital/')].map(([, stays]) => stays),
  }))
  .query('hospital', (state, params) => {
    const name = params.get('name');
    if (name === undefined) throw new Error('query hospital needs the parameter name');
    const stays = state.get(hospitalKey(name));
    if (stays === undefined) throw new Error(`no visit has ended at hospital ${name}`);
    return stays;
  });
