// Every path under the host agent's data directory, defined in one place.
//
// WRENN_DIR/
//   images/minimal/rootfs/                      built-in template (Debian minbase)
//   images/teams/{team b36}/{template b36}/     team and platform templates
//       rootfs/                                 the template's root file system
//       template.json                           defaults baked into the template
//   images/teams/{team b36}/.{template b36}.{tmp|deleted}-{hex}/
//                                               a snapshot being written, or a deleted template
//                                               whose files capsules still use (removed later)
//   sandboxes/{capsule id}/                     one directory per capsule (container runtime: see capsuleFiles)
//       config.json  rootfs/                    OCI bundle; rootfs is the overlay (template + upper layer)
//       disk.img  disk/{upper,work,envd.log}    sparse ext4 image holding the upper layer (the disk limit)
//       hosts  resolv.conf  hostname            generated files bind-mounted read-only into /etc
//       state.json                              spec + handle + network slot, written when create completes
//   cache/disks/ext4-{size}M.img                pre-formatted empty disk images, copied per capsule
//   envd/                                       envd bundle, bind-mounted read-only at /opt/wrenn
//   runc/                                       runc state root (scoped to this agent)
//   agent/capsules/{capsule id}.json            the agent's record of a capsule (template, team, timeout)
//   host-credentials.json                       control-plane credentials (0600)
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PLATFORM_UUID, isSafeName, uuidToBase36 } from '@wrenn/contracts';

export const MINIMAL_TEMPLATE = 'minimal';

/** The repository root, found from this compiled file (packages/host-agent/dist/src/layout.js). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');

/** WRENN_DIR, else `<repo>/.wrenn/data`: the agent and the template builder agree on it. */
export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  return path.resolve(env.WRENN_DIR || path.join(REPO_ROOT, '.wrenn', 'data'));
}

export class Layout {
  constructor(readonly root: string) {
    if (!path.isAbsolute(root)) throw new Error(`WRENN_DIR must be an absolute path, got "${root}"`);
  }

  get imagesDir(): string {
    return path.join(this.root, 'images');
  }
  get minimalTemplateDir(): string {
    return path.join(this.imagesDir, MINIMAL_TEMPLATE);
  }
  /** Directory of a template. The all-zero ids mean the built-in `minimal` template. */
  templateDir(teamId: string, templateId: string): string {
    if (teamId === PLATFORM_UUID && templateId === PLATFORM_UUID) return this.minimalTemplateDir;
    return path.join(this.teamTemplatesDir, uuidToBase36(teamId), uuidToBase36(templateId));
  }
  /** A sibling of a template directory (same file system, so a rename into place is atomic). */
  templateSibling(templateDir: string, kind: 'tmp' | 'deleted', suffix: string): string {
    return path.join(path.dirname(templateDir), `.${path.basename(templateDir)}.${kind}-${suffix}`);
  }
  get teamTemplatesDir(): string {
    return path.join(this.imagesDir, 'teams');
  }
  templateRootfs(templateDir: string): string {
    return path.join(templateDir, 'rootfs');
  }
  templateMeta(templateDir: string): string {
    return path.join(templateDir, 'template.json');
  }

  get sandboxesDir(): string {
    return path.join(this.root, 'sandboxes');
  }
  sandboxDir(sandboxId: string): string {
    // Capsule ids are validated at the RPC edge; refuse anything path-like here too.
    if (!isSafeName(sandboxId)) throw new Error(`unsafe sandbox id: ${sandboxId}`);
    return path.join(this.sandboxesDir, sandboxId);
  }

  /** Files of one capsule of the container runtime, all inside its sandbox directory. */
  capsuleFiles(sandboxId: string) {
    const dir = this.sandboxDir(sandboxId);
    const disk = path.join(dir, 'disk');
    return {
      dir,
      config: path.join(dir, 'config.json'),
      rootfs: path.join(dir, 'rootfs'),
      diskImage: path.join(dir, 'disk.img'),
      disk,
      upper: path.join(disk, 'upper'),
      work: path.join(disk, 'work'),
      log: path.join(disk, 'envd.log'),
      hosts: path.join(dir, 'hosts'),
      resolvConf: path.join(dir, 'resolv.conf'),
      hostname: path.join(dir, 'hostname'),
      state: path.join(dir, 'state.json'),
    };
  }
  get diskCacheDir(): string {
    return path.join(this.root, 'cache', 'disks');
  }

  get envdDir(): string {
    return path.join(this.root, 'envd');
  }
  get runcRoot(): string {
    return path.join(this.root, 'runc');
  }
  /** The host agent's own record of each capsule, read back when it re-adopts capsules after a restart. */
  get capsuleMetaDir(): string {
    return path.join(this.root, 'agent', 'capsules');
  }
  capsuleMetaFile(sandboxId: string): string {
    if (!isSafeName(sandboxId)) throw new Error(`unsafe sandbox id: ${sandboxId}`);
    return path.join(this.capsuleMetaDir, `${sandboxId}.json`);
  }

  get credentialsFile(): string {
    return path.join(this.root, 'host-credentials.json');
  }
}
