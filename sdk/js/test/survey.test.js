/**
 * The example handler `survey` (plugins/js/survey), a port of the Rust handler: the same rules,
 * events and rejection reasons, including serde_json's words for data that does not fit (the
 * expected texts below are the Rust handler's own answers to the same data).
 */

import '../test-support/register.js';

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { Rejection } from '@evhost/sdk';
import { decide, evolve } from '@evhost/sdk/testing';
import { decideWire } from '../src/handler.js';

const { default: survey, QUESTIONS } = await import('../../../plugins/js/survey/survey.js');

const prepare = { type: 'PrepareSurvey', data: { visit_id: '1001', patient_id: 'p-1' } };
const prepared = { visit_id: '1001', submitted: false };

/** The rejection reason for `type` with the data as this JSON text, against `state`. */
function reasonFor(type, dataJson, state = prepared) {
  const bytes = new TextEncoder().encode(JSON.stringify(state));
  const decision = decideWire(survey, bytes, { id: 'c', stream: 'survey-1001', type, data: dataJson, metadata: '{}' });
  return decision.rejection;
}

describe('survey (JavaScript port)', () => {
  it('prepares a survey once, then takes one answer', () => {
    const events = decide(survey, prepare);
    assert.deepEqual(events, [{ type: 'SurveyPrepared', data: { visit_id: '1001', patient_id: 'p-1', questions: QUESTIONS } }]);
    assert.deepEqual(Object.keys(events[0].data), ['visit_id', 'patient_id', 'questions'], 'the Rust field order');
    const state = evolve(survey, events);
    assert.deepEqual(state, prepared);
    assert.throws(() => decide(survey, prepare, state), new Rejection('survey for visit 1001 is already prepared'));
    const submitted = decide(survey, { type: 'SubmitSurvey', data: { score: 5, comment: null } }, state);
    assert.deepEqual(submitted, [{ type: 'SurveySubmitted', data: { score: 5 } }], 'no comment, no field');
    const done = evolve(survey, submitted, state);
    assert.throws(() => decide(survey, { type: 'SubmitSurvey', data: { score: 4 } }, done), new Rejection('the survey is already submitted'));
    assert.deepEqual(decide(survey, { type: 'SubmitSurvey', data: { score: 1, comment: 'ok' } }, state)[0].data, { score: 1, comment: 'ok' });
  });

  it('gives the Rust handler’s reasons for rules', () => {
    assert.equal(reasonFor('SubmitSurvey', '{"score":9}', { visit_id: null, submitted: false }), 'the survey is not prepared');
    assert.equal(reasonFor('SubmitSurvey', '{"score":9}'), 'score is 9; expected 1 to 5');
    assert.equal(reasonFor('SubmitSurvey', '{"score":0}'), 'score is 0; expected 1 to 5');
    assert.equal(reasonFor('PrepareSurvey', '{"visit_id":" ","patient_id":"p"}', { visit_id: null, submitted: false }), 'visit_id is empty; expected a value');
    assert.equal(reasonFor('PrepareSurvey', '{"visit_id":"1","patient_id":"\\u0085"}', { visit_id: null, submitted: false }), 'patient_id is empty; expected a value');
    assert.equal(reasonFor('Cancel', '{}'), 'unknown command type Cancel; expected one of PrepareSurvey, SubmitSurvey');
  });

  it('gives the Rust handler’s reasons for data that does not fit, byte for byte', () => {
    const cases = [
      ['PrepareSurvey', '{"visit_id":"1001"}', 'missing field `patient_id` at line 1 column 19'],
      ['PrepareSurvey', '{}', 'missing field `visit_id` at line 1 column 2'],
      ['PrepareSurvey', 'null', 'invalid type: null, expected struct variant SurveyCommand::PrepareSurvey at line 1 column 4'],
      ['PrepareSurvey', '[]', 'invalid type: sequence, expected struct variant SurveyCommand::PrepareSurvey at line 1 column 2'],
      ['PrepareSurvey', '["1","p"]', 'invalid type: sequence, expected struct variant SurveyCommand::PrepareSurvey at line 1 column 1'],
      ['PrepareSurvey', '{"visit_id":5,"patient_id":"p"}', 'invalid type: integer `5`, expected a string at line 1 column 13'],
      ['PrepareSurvey', '{"visit_id":"a","visit_id":"b","patient_id":"p"}', 'duplicate field `visit_id` at line 1 column 26'],
      ['PrepareSurvey', '{"visit_id":{},"patient_id":"p"}', 'invalid type: map, expected a string at line 1 column 12'],
      ['SubmitSurvey', '{"score":300}', 'invalid value: integer `300`, expected u8 at line 1 column 12'],
      ['SubmitSurvey', '{"score":-1}', 'invalid value: integer `-1`, expected u8 at line 1 column 11'],
      ['SubmitSurvey', '{"score":5.0}', 'invalid type: floating point `5.0`, expected u8 at line 1 column 12'],
      ['SubmitSurvey', '{"score":1e16}', 'invalid type: floating point `1e+16`, expected u8 at line 1 column 13'],
      ['SubmitSurvey', '{"score":216.05366471437094}', 'invalid type: floating point `216.05366471437097`, expected u8 at line 1 column 27'],
      ['SubmitSurvey', '{"score":1E400}', 'number out of range at line 1 column 14'],
      ['SubmitSurvey', '{"score":"a\\"b\\\\c\\u0001\\n\\u0085é"}', 'invalid type: string "a\\"b\\\\c\\u{1}\\n\\u{85}é", expected u8 at line 1 column 34'],
      ['SubmitSurvey', '{"comment":"x"}', 'missing field `score` at line 1 column 15'],
      ['SubmitSurvey', '{"score":5,"comment":7}', 'invalid type: integer `7`, expected a string at line 1 column 22'],
      ['SubmitSurvey', '{ "score" : 300 , "comment":"x" }', 'invalid value: integer `300`, expected u8 at line 1 column 15'],
    ];
    for (const [type, data, serde] of cases) {
      assert.equal(reasonFor(type, data), `${type} data does not match: ${serde}`, data);
    }
  });
});
