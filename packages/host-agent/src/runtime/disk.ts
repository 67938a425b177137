// Per-capsule disks: a sparse ext4 image, loop-mounted, holding the overlay's
// upper and work directories. Its size is the capsule's disk limit: a full
// disk is ENOSPC inside the capsule and nothing else.
//
// Formatting an image costs ~30 ms (20 GiB) per capsule, so one empty image
// per size is formatted once (with upper/ and work/ already in it) into a
// cache, and each capsule gets a sparse copy of it (only the few MiB of
// metadata are written). The copy is made ahead of time: a few spare copies
// of each size in use wait in the cache, and a create takes one with a rename
// (the copy costs 7-17 ms inside a busy agent; the rename well under 1 ms).
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run, runStatus } from './exec.js';

export const MIN_DISK_MB = 32;

/** Fast ext4 for a fresh image: no journal (the upper layer is rebuilt, not repaired), lazy init, no root reserve. */
const MKFS_ARGS = ['-q', '-F', '-E', 'lazy_itable_init=1,lazy_journal_init=1', '-O', '^has_journal', '-m', '0'];

/** Spare copies kept ready per disk size (enough for a burst of sequential creates). */
export const SPARES_PER_SIZE = 2;

export class DiskCache {
  private readonly pending = new Map<number, Promise<string>>();
  /** Ready spare copies per size (paths in the spare directory). */
  private readonly spares = new Map<number, string[]>();
  /** Sizes whose spares are being made now. */
  private readonly refilling = new Set<number>();
  private closed = false;
  constructor(
    private readonly dir: string,
    private readonly onError: (err: unknown) => void = () => {},
    private readonly sparesPerSize = SPARES_PER_SIZE,
  ) {}

  private get spareDir(): string {
    return path.join(this.dir, 'spare');
  }

  /**
   * Removes spare copies a previous run left (a crash may have cut one short;
   * they are cheap to make again). Call once at start, before any create.
   */
  async sweepSpares(): Promise<void> {
    await fs.rm(this.spareDir, { recursive: true, force: true });
  }

  /**
   * Puts a fresh empty image of `sizeMb` at `dest`: a spare copy moved into
   * place when one is ready, else a copy made now. Either way more spares of
   * this size are made in the background afterwards.
   */
  async claim(sizeMb: number, dest: string): Promise<void> {
    const master = await this.image(sizeMb);
    const spare = this.spares.get(sizeMb)?.pop();
    try {
      if (spare) await fs.rename(spare, dest);
      else await copyImage(master, dest);
    } finally {
      this.refill(sizeMb, master);
    }
  }

  /** Stops making spares and removes the ready ones (agent shutdown). */
  async close(): Promise<void> {
    this.closed = true;
    this.spares.clear();
    await this.sweepSpares();
  }

  private refill(sizeMb: number, master: string): void {
    if (this.closed || this.refilling.has(sizeMb)) return;
    this.refilling.add(sizeMb);
    void (async () => {
      try {
        await fs.mkdir(this.spareDir, { recursive: true });
        const list = this.spares.get(sizeMb) ?? [];
        this.spares.set(sizeMb, list);
        while (!this.closed && list.length < this.sparesPerSize) {
          const file = path.join(this.spareDir, `ext4-${sizeMb}M-${randomBytes(6).toString('hex')}.img`);
          // Copied under a temporary name: a spare is listed only once it is whole.
          await copyImage(master, `${file}.tmp`);
          await fs.rename(`${file}.tmp`, file);
          if (this.closed) await fs.rm(file, { force: true });
          else list.push(file);
        }
      } catch (err) {
        this.onError(err);
      } finally {
        this.refilling.delete(sizeMb);
      }
    })();
  }

  /** Path of the formatted empty image of that size, made on first use. */
  image(sizeMb: number): Promise<string> {
    let p = this.pending.get(sizeMb);
    if (!p) {
      p = this.make(sizeMb).catch((err: unknown) => {
        this.pending.delete(sizeMb);
        throw err;
      });
      this.pending.set(sizeMb, p);
    }
    return p;
  }

  private async make(sizeMb: number): Promise<string> {
    const file = path.join(this.dir, `ext4-${sizeMb}M.img`);
    if (await fs.stat(file).catch(() => null)) return file;
    await fs.mkdir(this.dir, { recursive: true });
    const tag = `${process.pid}-${randomBytes(4).toString('hex')}`;
    const tmp = `${file}.tmp-${tag}`;
    // mkfs -d copies a directory tree into the new file system: upper/ and work/ come pre-made.
    const skel = await fs.mkdtemp(path.join(os.tmpdir(), 'wrenn-disk-skel-'));
    try {
      await fs.mkdir(path.join(skel, 'upper'), { mode: 0o755 });
      await fs.mkdir(path.join(skel, 'work'), { mode: 0o700 });
      await run('truncate', ['-s', `${sizeMb}M`, tmp]);
      await run('mkfs.ext4', [...MKFS_ARGS, '-d', skel, tmp]);
      await fs.rename(tmp, file);
      return file;
    } finally {
      await fs.rm(tmp, { force: true });
      await fs.rm(skel, { recursive: true, force: true });
    }
  }
}

/** Sparse copy of a cached image. */
export async function copyImage(from: string, to: string): Promise<void> {
  await run('cp', ['--sparse=always', from, to]);
}

/** Loop-mounts an image; autoclear detaches the loop device when it is unmounted. */
export async function mountImage(image: string, mountPoint: string): Promise<void> {
  await run('mount', ['-o', 'loop,nodev', image, mountPoint]);
}

/** Loop devices whose backing file is `image` (normally none once it is unmounted). */
export async function loopDevicesOf(image: string): Promise<string[]> {
  const r = await runStatus('losetup', ['-n', '-O', 'NAME', '-j', image]);
  return r.stdout
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
}

/** Every loop device with its backing file. */
export async function allLoopDevices(): Promise<{ device: string; backing: string }[]> {
  const out = await run('losetup', ['-n', '-l', '--raw', '-O', 'NAME,BACK-FILE']);
  const list: { device: string; backing: string }[] = [];
  for (const line of out.split('\n')) {
    const m = /^(\S+)\s+(.*)$/.exec(line.trim());
    // losetup --raw escapes spaces as \x20; our paths have none.
    if (m) list.push({ device: m[1]!, backing: m[2]!.replace(/ \(deleted\)$/, '') });
  }
  return list;
}

export async function detachLoop(device: string): Promise<void> {
  const r = await runStatus('losetup', ['-d', device]);
  if (r.code !== 0 && !/No such device|not.*configured/i.test(r.stderr)) {
    throw new Error(`losetup -d ${device} failed: ${r.stderr.trim()}`);
  }
}

/** Bytes actually allocated by a (sparse) file. */
export async function allocatedBytes(file: string): Promise<number> {
  const st = await fs.stat(file);
  return st.blocks * 512;
}

export function overlayOptions(lower: string, upper: string, work: string): string {
  for (const p of [lower, upper, work]) {
    // The option string is comma- and colon-separated; such paths cannot be expressed.
    if (/[,:\\]/.test(p)) throw new Error(`path unusable in an overlay mount: ${p}`);
  }
  return `lowerdir=${lower},upperdir=${upper},workdir=${work}`;
}

export async function mountOverlay(lower: string, upper: string, work: string, target: string): Promise<void> {
  await run('mount', ['-t', 'overlay', 'overlay', '-o', overlayOptions(lower, upper, work), target]);
}
