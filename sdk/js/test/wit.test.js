/**
 * The SDK ships its own copy of the WIT (an installed SDK has no repository around it); inside
 * the repository the copy must be the repository's `wit/0.1.0/plugin.wit`, byte for byte.
 */

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { it } from 'node:test';

const copy = new URL('../wit/plugin.wit', import.meta.url);
const original = new URL('../../../wit/0.1.0/plugin.wit', import.meta.url);

it("the SDK's WIT is the repository's", { skip: !existsSync(original) && 'not inside the evhost repository' }, () => {
  assert.ok(readFileSync(copy).equals(readFileSync(original)), 'sdk/js/wit/plugin.wit differs from wit/0.1.0/plugin.wit: copy it over');
});
