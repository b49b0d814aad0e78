/**
 * A module resolution hook that maps `@evhost/sdk` (and its subpaths) to this SDK, so the tests
 * can import the repository's example plugins, which have no `node_modules` of their own (the
 * build tool resolves the SDK for them the same way).
 * @module
 */

const SDK_ENTRIES = {
  '@evhost/sdk': '../index.js',
  '@evhost/sdk/testing': '../testing.js',
  '@evhost/sdk/guest': '../src/guest.js',
};

export async function resolve(specifier, context, nextResolve) {
  const file = SDK_ENTRIES[specifier];
  if (file === undefined) return nextResolve(specifier, context);
  return { url: new URL(file, import.meta.url).href, shortCircuit: true };
}
