// Bundles envd into one file so it starts fast inside a capsule (no module
// resolution over hundreds of files). node-pty stays external: it is native.
// Usage: node scripts/bundle.mjs [outfile]   (default bundle/envd.mjs)
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const pkgDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outfile = path.resolve(process.argv[2] ?? path.join(pkgDir, 'bundle/envd.mjs'));

// npm may install @bufbuild/protobuf twice (for envd and for contracts); one
// copy in the bundle is less code to parse at start-up.
const oneProtobuf = {
  name: 'one-protobuf',
  setup(b) {
    b.onResolve({ filter: /^@bufbuild\/protobuf(\/.*)?$/ }, async (args) => {
      if (args.pluginData?.oneProtobuf) return undefined;
      const r = await b.resolve(args.path, { kind: args.kind, resolveDir: pkgDir, pluginData: { oneProtobuf: true } });
      return r.errors.length ? undefined : { path: r.path };
    });
  },
};

// Connect imports zlib for (de)compression that envd has switched off; loading
// it eagerly costs milliseconds at every start. Give Connect a stand-in that
// loads zlib on first use.
const lazyZlib = {
  name: 'lazy-zlib',
  setup(b) {
    b.onResolve({ filter: /^(node:)?zlib$/ }, (args) =>
      args.importer.includes(`${path.sep}@connectrpc${path.sep}`)
        ? { path: 'lazy-zlib', namespace: 'lazy-zlib' }
        : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'lazy-zlib' }, () => ({
      loader: 'js',
      contents: [
        "import { createRequire } from 'node:module';",
        "let z; const zlib = () => (z ??= createRequire(import.meta.url)('node:zlib'));",
        'export const gzip = (...a) => zlib().gzip(...a);',
        'export const gunzip = (...a) => zlib().gunzip(...a);',
        'export const brotliCompress = (...a) => zlib().brotliCompress(...a);',
        'export const brotliDecompress = (...a) => zlib().brotliDecompress(...a);',
      ].join('\n'),
    }));
  },
};

await build({
  entryPoints: [path.join(pkgDir, 'dist/src/main.js')],
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  outfile,
  minify: process.env.ENVD_BUNDLE_NOMINIFY !== '1',
  legalComments: 'none',
  external: ['node-pty'],
  plugins: [oneProtobuf, lazyZlib],
  banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
  logLevel: 'warning',
});
