// Compiled by types.test.js with `tsc --noEmit`: what a TypeScript author writes must type-check,
// and the lines marked @ts-expect-error must not.
import { Rejection, handler, projection, policy, send, schedule } from '@evhost/sdk';
import { MemoryState, apply, decide, query } from '@evhost/sdk/testing';

type Commands = {
  CheckIn: { patient_id: string; triage_level: number };
  CheckOut: { disposition: 'discharged' | 'admitted' };
};
type Events = {
  PatientCheckedIn: { patient_id: string; triage_level: number };
  PatientCheckedOut: { disposition: string };
};
type Visit = { checkedIn: boolean; triage: number };

class Discharged {
  constructor(public summary: string) {}
}

export const visit = handler<Visit, Commands, Events>({
  name: 'visit',
  category: 'visit',
  initialState: { checkedIn: false, triage: 0 },
})
  .evolve('PatientCheckedIn', (state, event) => ({ ...state, checkedIn: true, triage: event.data.triage_level }))
  .evolve('PatientCheckedOut', (state) => {
    state.checkedIn = false;
  })
  .decide('CheckIn', (state, command) => {
    const level: number = command.data.triage_level;
    if (state.checkedIn) throw new Rejection('already checked in');
    return [{ type: 'PatientCheckedIn', data: { patient_id: command.data.patient_id, triage_level: level } }];
  })
  .decide('CheckOut', (state, command) => {
    // @ts-expect-error: the disposition is not a number
    const wrong: number = command.data.disposition;
    return [new Discharged(String(wrong))];
  });

handler<Visit, Commands, Events>({ name: 'v', category: 'v' })
  // @ts-expect-error: not an event type of the handler
  .decide('CheckIn', () => [{ type: 'Unknown', data: {} }]);

handler<Visit, Commands, Events>({ name: 'v', category: 'v' })
  // @ts-expect-error: the data does not match the event type
  .decide('CheckIn', () => [{ type: 'PatientCheckedOut', data: { disposition: 5 } }]);

export const stays = projection<Events>({ name: 'stays', categories: ['visit'] })
  .on('PatientCheckedIn', (state, event) => {
    const patient: string = event.data.patient_id;
    state.put(`visit/${event.entityId}`, { patient, at: event.recordedAtMs });
  })
  .query('visits', (state, params) => [...state.scan<{ patient: string }>('visit/')].map(([, v]) => v.patient + (params.get('x') ?? '')));

projection<Events>({ name: 'p' }).query('q', (state) => {
  // @ts-expect-error: a query's state is read-only
  state.put('k', 1);
});

export const surveys = policy<Events>({ name: 'surveys', categories: ['visit'] })
  .on('PatientCheckedOut', (state, event) => [
    send('survey', `survey-${event.entityId}`, 'PrepareSurvey', { visit_id: event.entityId }),
    schedule(`remind/${event.entityId}`, event.recordedAtMs + 1000, { visit: event.entityId }),
  ])
  .onTimer((state, timer) => send('survey', `survey-${timer.payload.visit}`, 'Remind'))
  .onRejected(() => undefined);

const events = decide(visit, { type: 'CheckIn', data: { patient_id: 'p', triage_level: 2 } });
const firstType: string = events[0].type;
const memory = new MemoryState();
apply(stays, memory, [{ position: 1, stream: 'visit-1', type: 'PatientCheckedIn', data: {} }]);
const answer: string[] = query<string[]>(stays, memory, 'visits');
void firstType;
void answer;
