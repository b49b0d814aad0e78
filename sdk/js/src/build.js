/**
 * `evhost-js build`: turns a plugin module into a WebAssembly component.
 *
 * 1. The author's module is bundled natively (esbuild), with `@evhost/sdk` resolved to this SDK,
 *    so a plugin directory needs no `node_modules` of its own, and imported in Node to read its
 *    default export: the plugin's kind decides the world, and its name and subscriptions are
 *    checked as the host will.
 * 2. An entry module is generated: it imports the plugin and the world's `evhost:plugin/*`
 *    interfaces and exports the world's functions through the SDK's glue (`src/guest.js`).
 * 3. The entry is bundled into one ES module and handed to componentize-js, with every WASI
 *    feature left out, so the component imports only `evhost:plugin/*`.
 * @module
 */

import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { pluginKind } from './plugin.js';

/** The SDK's root directory (where package.json is). */
export const SDK_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');
/** The WIT package the components implement. */
export const WIT_DIR = join(SDK_DIR, 'wit');

/** The SDK's public entry points, as `@evhost/sdk` specifiers, and the files they name. */
const SDK_ENTRIES = {
  '@evhost/sdk': 'index.js',
  '@evhost/sdk/testing': 'testing.js',
  '@evhost/sdk/guest': 'src/guest.js',
};

/** WASI features the component leaves out: with all of them gone it imports only evhost's interfaces. */
const DISABLED_FEATURES = ['random', 'stdio', 'clocks', 'http', 'fetch-event'];

/** What each world imports and exports, and the glue function that builds its exports. */
const WORLDS = {
  handler: { glue: 'exportHandler', state: false, exports: ['meta', 'evolve', 'decide'] },
  projection: { glue: 'exportProjection', state: true, exports: ['meta', 'apply', 'query'] },
  policy: { glue: 'exportPolicy', state: true, exports: ['meta', 'react', 'onTimer', 'onRejected'] },
};

/** A build error with a message meant for the author (no stack trace needed). */
export class BuildError extends Error {
  constructor(message) {
    super(message);
    this.name = 'BuildError';
  }
}

/**
 * Builds the plugin module `source` into the component `output`.
 * @param {string} source path of the plugin's module
 * @param {string} output path of the `.wasm` to write
 * @param {{log?: (line: string) => void}} [options] progress lines (default: none)
 * @returns {Promise<{output: string, size: number, kind: string, name: string}>}
 */
export async function build(source, output, { log = () => {} } = {}) {
  const sourcePath = resolve(source);
  const outputPath = resolve(output);
  await expectFile(sourcePath);
  const workDir = await mkdtemp(join(tmpdir(), 'evhost-js-'));
  try {
    const plugin = await inspect(sourcePath, workDir);
    log(`${plugin.kind} ${plugin.name}: bundling`);
    const entryPath = join(workDir, 'entry.js');
    await writeFile(entryPath, entryModule(sourcePath, plugin.kind));
    const bundlePath = join(workDir, 'component.js');
    await bundle(entryPath, bundlePath);
    log(`${plugin.kind} ${plugin.name}: componentizing`);
    const component = await componentizeBundle(bundlePath, plugin.kind);
    await writeFile(outputPath, component);
    return { output, size: component.length, kind: plugin.kind, name: plugin.name };
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

async function expectFile(path) {
  let info;
  try {
    info = await stat(path);
  } catch {
    throw new BuildError(`${path} does not exist; expected a plugin module such as plugin.js`);
  }
  if (!info.isFile()) throw new BuildError(`${path} is not a file; expected a plugin module such as plugin.js`);
}

let inspections = 0;

/**
 * Bundles and imports the author's module natively, and returns what its default export
 * describes. Defining the plugin checks its name, category and type names.
 * @returns {Promise<{kind: string, name: string}>}
 */
export async function inspect(sourcePath, workDir) {
  // Node caches modules by URL: each inspection gets a file of its own.
  inspections += 1;
  const bundlePath = join(workDir, `inspect-${inspections}.mjs`);
  await bundle(sourcePath, bundlePath);
  let module;
  try {
    module = await import(pathToFileURL(bundlePath).href);
  } catch (error) {
    throw new BuildError(`${sourcePath} failed when loaded: ${error?.stack ?? error}`);
  }
  const plugin = module.default;
  const kind = pluginKind(plugin);
  if (kind === undefined) {
    const found = plugin === undefined ? 'no default export' : `a default export that is ${describeValue(plugin)}`;
    throw new BuildError(
      `${sourcePath} has ${found}; expected \`export default handler({...})\`, projection({...}) or policy({...}) from @evhost/sdk`,
    );
  }
  if (!(kind in WORLDS)) throw new BuildError(`${sourcePath}: unknown plugin kind ${kind}`);
  return { kind, name: plugin.describe().name };
}

function describeValue(value) {
  if (value === null) return 'null';
  if (typeof value === 'function') return `the function ${value.name || '(anonymous)'} (call it?)`;
  if (typeof value === 'object') return `an object with the keys ${Object.keys(value).join(', ') || '(none)'}`;
  return `a ${typeof value}`;
}

/** The entry module of a component: the world's imports, the plugin, and its exports through the glue. */
export function entryModule(sourcePath, kind) {
  const world = WORLDS[kind];
  const lines = [
    `import plugin from ${JSON.stringify(sourcePath)};`,
    `import { ${world.glue} } from '@evhost/sdk/guest';`,
    `import { write } from 'evhost:plugin/log@0.1.0';`,
  ];
  if (world.state) {
    lines.push(`import { get, put, delete as remove, scan } from 'evhost:plugin/state@0.1.0';`);
    lines.push(`const exported = ${world.glue}(plugin, { write, state: { get, put, delete: remove, scan } });`);
  } else {
    lines.push(`const exported = ${world.glue}(plugin, { write });`);
  }
  for (const name of world.exports) lines.push(`export const ${name} = exported.${name};`);
  return `${lines.join('\n')}\n`;
}

/** Resolves `@evhost/sdk` (and its subpaths) to this SDK's files, wherever the plugin lives. */
const resolveSdk = {
  name: 'evhost-sdk',
  setup(builder) {
    builder.onResolve({ filter: /^@evhost\/sdk(\/.*)?$/ }, (args) => {
      const file = SDK_ENTRIES[args.path];
      if (file === undefined) {
        return { errors: [{ text: `${args.path} is not an entry point of @evhost/sdk; expected one of ${Object.keys(SDK_ENTRIES).join(', ')}` }] };
      }
      return { path: join(SDK_DIR, file) };
    });
  },
};

/** Bundles `entry` into the single ES module `output`, leaving the host's interfaces as imports. */
async function bundle(entry, output) {
  const esbuild = await loadDependency('esbuild');
  try {
    await esbuild.build({
      entryPoints: [entry],
      outfile: output,
      bundle: true,
      format: 'esm',
      platform: 'neutral',
      // Packages the plugin imports from npm: the neutral platform names no fields by default.
      mainFields: ['module', 'main'],
      external: ['evhost:plugin/*'],
      plugins: [resolveSdk],
      // Typed classes are matched by name: bundling must not rename them.
      keepNames: true,
      logLevel: 'silent',
    });
  } catch (error) {
    const messages = error.errors?.map(formatEsbuildMessage).join('\n') ?? String(error);
    throw new BuildError(`bundling ${entry} failed:\n${messages}`);
  }
}

function formatEsbuildMessage({ text, location }) {
  return location ? `${location.file}:${location.line}:${location.column}: ${text}` : text;
}

async function componentizeBundle(bundlePath, kind) {
  const { componentize } = await loadDependency('@bytecodealliance/componentize-js');
  try {
    const { component } = await componentize({
      sourcePath: bundlePath,
      witPath: WIT_DIR,
      worldName: kind,
      disableFeatures: DISABLED_FEATURES,
    });
    return component;
  } catch (error) {
    throw new BuildError(`componentize-js failed: ${error?.message ?? error}`);
  }
}

/** Imports one of the SDK's build dependencies, or says how to install them. */
async function loadDependency(name) {
  try {
    return await import(name);
  } catch (error) {
    if (error?.code === 'ERR_MODULE_NOT_FOUND') {
      throw new BuildError(
        `${name} is not installed beside the SDK (${SDK_DIR}); run \`npm ci\` there, or install the SDK with \`npm install --install-links <path to sdk/js>\``,
      );
    }
    throw error;
  }
}
