#!/usr/bin/env node
/**
 * `evhost-js`: the command line of the JavaScript SDK.
 *
 *     evhost-js build <plugin.js> -o <plugin.wasm>
 *
 * builds a plugin module (one that `export default`s a handler, projection or policy) into a
 * WebAssembly component for `evhost deploy`, and prints one line:
 * `built <out> (<size> bytes): <kind> <name>`.
 * @module
 */

import { BuildError, build } from '../src/build.js';

const USAGE = `usage: evhost-js build <plugin.js> -o <plugin.wasm>

Builds a plugin module into a WebAssembly component for \`evhost deploy\`. The module
\`export default\`s handler({...}), projection({...}) or policy({...}) from @evhost/sdk.

options:
  -o, --output <file>  the component to write (required)
  -v, --verbose        print each step
  -h, --help           print this help`;

/** Parses `build`'s arguments: the source, the output and whether to print progress. */
function parseBuildArgs(args) {
  let source;
  let output;
  let verbose = false;
  for (let index = 0; index < args.length; index += 1) {
    const arg = args[index];
    if (arg === '-o' || arg === '--output') {
      output = args[index + 1];
      if (output === undefined) throw new BuildError(`${arg} needs a file name`);
      index += 1;
    } else if (arg.startsWith('--output=')) {
      output = arg.slice('--output='.length);
    } else if (arg === '-v' || arg === '--verbose') {
      verbose = true;
    } else if (arg.startsWith('-')) {
      throw new BuildError(`unknown option ${arg}`);
    } else if (source === undefined) {
      source = arg;
    } else {
      throw new BuildError(`unexpected argument ${arg}; expected one plugin module`);
    }
  }
  if (source === undefined) throw new BuildError('the plugin module is missing');
  if (output === undefined) throw new BuildError('the output is missing; add -o <plugin.wasm>');
  return { source, output, verbose };
}

async function main(args) {
  const [command, ...rest] = args;
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
    console.log(USAGE);
    return command === undefined ? 2 : 0;
  }
  if (command !== 'build') {
    console.error(`evhost-js: unknown command ${command}; expected build\n\n${USAGE}`);
    return 2;
  }
  if (rest.includes('-h') || rest.includes('--help')) {
    console.log(USAGE);
    return 0;
  }
  let options;
  try {
    options = parseBuildArgs(rest);
  } catch (error) {
    console.error(`evhost-js build: ${error.message}\n\n${USAGE}`);
    return 2;
  }
  const started = Date.now();
  const log = options.verbose ? (line) => console.error(`evhost-js: ${line}`) : undefined;
  try {
    const built = await build(options.source, options.output, { log });
    console.log(`built ${built.output} (${built.size} bytes): ${built.kind} ${built.name}`);
    log?.(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    return 0;
  } catch (error) {
    console.error(`evhost-js build: ${error instanceof BuildError ? error.message : (error?.stack ?? error)}`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
