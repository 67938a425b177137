// The real `minimal` template for tests: the one in the default data directory
// (setup.sh builds it), built there first when a fresh machine lacks it.
import { Layout, defaultDataDir } from '../../src/layout.js';
import { buildMinimalTemplate } from '../../src/template/build-minimal.js';

let cached: Promise<string> | undefined;

/** Directory of an up-to-date minimal template (contains rootfs/ and template.json). */
export function ensureMinimalTemplate(): Promise<string> {
  cached ??= buildMinimalTemplate({
    layout: new Layout(defaultDataDir()),
    log: (line) => process.stderr.write(`# ${line}\n`),
  }).then((r) => r.dir);
  return cached;
}
