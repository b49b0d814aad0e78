/**
 * `evhost-js build` up to componentize-js (which takes seconds, so it is left to the host's
 * end-to-end tests): finding the plugin a module exports, the errors when it exports none, the
 * generated entry module, and the command line's usage errors.
 */

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { BuildError, entryModule, inspect } from '../src/build.js';

const BIN = fileURLToPath(new URL('../bin/evhost-js.js', import.meta.url));
const run = promisify(execFile);

let dir;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'evhost-js-test-'));
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Writes `source` as a module of the temporary directory and inspects it as the build does. */
async function inspectSource(name, source) {
  const path = join(dir, name);
  await writeFile(path, source);
  return inspect(path, dir);
}

/** Runs the command line; resolves to its exit code and output, whatever the code. */
async function cli(...args) {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args]);
    return { code: 0, stdout, stderr };
  } catch (error) {
    return { code: error.code, stdout: error.stdout, stderr: error.stderr };
  }
}

describe('build', () => {
  it("finds the plugin's kind and name, resolving @evhost/sdk without node_modules", async () => {
    const found = await inspectSource(
      'triage.js',
      `import { projection } from '@evhost/sdk';
       export default projection({ name: 'triage', categories: ['visit'] }).on('PatientCheckedIn', () => {});`,
    );
    assert.deepEqual(found, { kind: 'projection', name: 'triage' });
  });

  it('says so when the module has no default export', async () => {
    await assert.rejects(
      inspectSource('none.js', `import { handler } from '@evhost/sdk';\nexport const plugin = handler({ name: 'a', category: 'a' });`),
      (error) => error instanceof BuildError && /has no default export; expected `export default handler\(\{\.\.\.\}\)`/.test(error.message),
    );
  });

  it('says so when the default export is not a plugin', async () => {
    await assert.rejects(inspectSource('object.js', 'export default { name: "a" };'), /a default export that is an object with the keys name/);
    await assert.rejects(
      inspectSource('function.js', `import { handler } from '@evhost/sdk';\nexport default function make() { return handler({ name: 'a', category: 'a' }); }`),
      /the function make \(call it\?\)/,
    );
  });

  it('reports a plugin that fails when defined', async () => {
    await assert.rejects(
      inspectSource('bad-name.js', `import { handler } from '@evhost/sdk';\nexport default handler({ name: 'Bad Name', category: 'a' });`),
      /failed when loaded: TypeError: plugin name "Bad Name" is not 1 to 64 characters/,
    );
  });

  it('reports what cannot be bundled', async () => {
    await assert.rejects(inspectSource('missing.js', `import './nowhere.js';`), /bundling .* failed:\n.*Could not resolve "\.\/nowhere\.js"/);
    await assert.rejects(
      inspectSource('subpath.js', `import { x } from '@evhost/sdk/nope';`),
      /@evhost\/sdk\/nope is not an entry point of @evhost\/sdk/,
    );
  });

  it("generates an entry that exports the world's functions through the glue", () => {
    const handlerEntry = entryModule('/plugins/a.js', 'handler');
    assert.match(handlerEntry, /^import plugin from "\/plugins\/a\.js";$/m);
    assert.match(handlerEntry, /import \{ exportHandler \} from '@evhost\/sdk\/guest';/);
    assert.doesNotMatch(handlerEntry, /evhost:plugin\/state/);
    for (const name of ['meta', 'evolve', 'decide']) assert.match(handlerEntry, new RegExp(`^export const ${name} = exported\\.${name};$`, 'm'));
    const policyEntry = entryModule('/plugins/b.js', 'policy');
    assert.match(policyEntry, /import \{ get, put, delete as remove, scan \} from 'evhost:plugin\/state@0\.1\.0';/);
    for (const name of ['react', 'onTimer', 'onRejected']) assert.match(policyEntry, new RegExp(`^export const ${name} = `, 'm'));
  });
});

describe('evhost-js command line', () => {
  it('prints its usage without arguments, exit code 2', async () => {
    const { code, stdout } = await cli();
    assert.equal(code, 2);
    assert.match(stdout, /^usage: evhost-js build <plugin\.js> -o <plugin\.wasm>/);
  });

  it('refuses incomplete arguments, exit code 2', async () => {
    const { code, stderr } = await cli('build', 'plugin.js');
    assert.equal(code, 2);
    assert.match(stderr, /^evhost-js build: the output is missing; add -o <plugin\.wasm>/);
    assert.equal((await cli('bundle')).code, 2);
  });

  it('fails on a missing plugin module, exit code 1', async () => {
    const { code, stderr } = await cli('build', join(dir, 'absent.js'), '-o', join(dir, 'absent.wasm'));
    assert.equal(code, 1);
    assert.match(stderr, /^evhost-js build: .*absent\.js does not exist; expected a plugin module/);
  });
});
