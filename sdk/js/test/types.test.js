/**
 * The TypeScript declarations: `test/types/check.ts` uses the SDK as a TypeScript author would,
 * with lines that must not type-check marked `@ts-expect-error`; `tsc` must accept the file.
 */

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const require = createRequire(import.meta.url);

/** tsc, when TypeScript is installed (componentize-js brings it along). */
function findTsc() {
  try {
    // typescript's exports do not name bin/tsc; it sits beside lib/, where the main module is.
    return join(dirname(require.resolve('typescript')), '..', 'bin', 'tsc');
  } catch {
    return undefined;
  }
}

const tsc = findTsc();

it('the declarations type-check what an author writes', { skip: tsc === undefined && 'typescript is not installed' }, async () => {
  const project = fileURLToPath(new URL('./types/tsconfig.json', import.meta.url));
  try {
    await promisify(execFile)(process.execPath, [tsc, '-p', project]);
  } catch (error) {
    assert.fail(`tsc found errors:\n${error.stdout}${error.stderr}`);
  }
});
