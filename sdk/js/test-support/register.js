/**
 * Registers `sdk-resolver.js`; import it before importing an example plugin:
 * `import '../test-support/register.js'`, then `await import('.../stays.js')`.
 * @module
 */

import { register } from 'node:module';

register('./sdk-resolver.js', import.meta.url);
