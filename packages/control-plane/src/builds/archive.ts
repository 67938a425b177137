// COPY archives: an upload (tar, tar.gz or zip, told apart by their first
// bytes) is read completely at submission, every entry is checked, and the
// entries are written again as one plain tar. The build capsule gets only that
// tar: the minimal template has tar and gzip but not unzip, and what it
// extracts is exactly what was checked here (no second parser to disagree).
import { Readable } from 'node:stream';
import { buffer as collect } from 'node:stream/consumers';
import { createGunzip } from 'node:zlib';
import path from 'node:path/posix';
import tar from 'tar-stream';
import yauzl from 'yauzl';
import { normaliseArchivePath } from './recipe.js';

export const MAX_ARCHIVE_BYTES = 100 * 1024 * 1024;
/** What an archive may unpack to (a small gzip can expand enormously). */
export const MAX_UNPACKED_BYTES = 512 * 1024 * 1024;
const MAX_ENTRIES = 100_000;

export class ArchiveError extends Error {
  override name = 'ArchiveError';
}

export type ArchiveFormat = 'tar' | 'tar.gz' | 'zip';

export function sniffFormat(buf: Buffer): ArchiveFormat | null {
  if (buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) return 'tar.gz';
  if (buf.length >= 4 && buf.readUInt32LE(0) === 0x04034b50) return 'zip';
  if (buf.length >= 4 && buf.readUInt32LE(0) === 0x06054b50) return 'zip'; // empty zip
  if (buf.length >= 262 && buf.subarray(257, 262).toString('latin1') === 'ustar') return 'tar';
  return null;
}

interface Entry {
  name: string;
  type: 'file' | 'directory' | 'symlink' | 'link';
  mode: number;
  linkname?: string;
  data?: Buffer;
}

export interface CheckedArchive {
  format: ArchiveFormat;
  /** The entries again, as a plain tar. */
  tar: Buffer;
  /** Every path the archive provides (files, directories, and the directories implied by them). */
  paths: Set<string>;
}

/** Reads, checks and re-packs an archive; an ArchiveError says what is wrong with it. */
export async function checkArchive(buf: Buffer): Promise<CheckedArchive> {
  if (buf.length > MAX_ARCHIVE_BYTES) throw new ArchiveError(`archive is larger than 100 MB`);
  const format = sniffFormat(buf);
  if (!format) throw new ArchiveError('archive must be a tar, tar.gz or zip file');
  let entries: Entry[];
  try {
    entries = format === 'zip' ? await readZip(buf) : await readTar(buf, format === 'tar.gz');
  } catch (err) {
    if (err instanceof ArchiveError) throw err;
    throw new ArchiveError(`archive (${format}) cannot be read: ${(err as Error).message}`);
  }
  const paths = new Set<string>(['.']);
  const byName = new Map<string, Entry>();
  for (const e of entries) {
    const name = normaliseArchivePath(e.name);
    if (name === null || name === '.') {
      if (name === '.' && e.type === 'directory') continue;
      throw new ArchiveError(`archive entry "${e.name}" must be a relative path inside the archive (no "..")`);
    }
    e.name = name;
    // A path through a symlink of the archive could lead anywhere once extracted.
    for (let p = path.dirname(name); p !== '.'; p = path.dirname(p)) {
      if (byName.get(p)?.type === 'symlink') {
        throw new ArchiveError(`archive entry "${name}" lies under the symlink "${p}"`);
      }
    }
    if (e.type === 'symlink') {
      const target = e.linkname ?? '';
      // Resolved from the link's directory, the target must stay inside the archive.
      const resolved = target.startsWith('/') ? null : normaliseArchivePath(path.join(path.dirname(name), target));
      if (!target || resolved === null) {
        throw new ArchiveError(`archive entry "${name}" is a symlink pointing outside the archive ("${target}")`);
      }
    } else if (e.type === 'link') {
      const target = normaliseArchivePath(e.linkname ?? '');
      if (target === null || target === '.' || !byName.has(target) || byName.get(target)!.type !== 'file') {
        throw new ArchiveError(
          `archive entry "${name}" is a hard link to "${e.linkname ?? ''}", which is not a file earlier in the archive`,
        );
      }
      e.linkname = target;
    }
    byName.set(name, e);
    for (let p = name; p !== '.'; p = path.dirname(p)) paths.add(p);
  }
  const pack = tar.pack();
  const out = collect(pack);
  for (const e of byName.values()) {
    // Permission bits only: no setuid/setgid files from an upload.
    const mode = e.mode & 0o777 || (e.type === 'directory' ? 0o755 : 0o644);
    if (e.type === 'file') {
      await new Promise<void>((resolve, reject) =>
        pack.entry({ name: e.name, type: 'file', mode, size: e.data!.length }, e.data!, (err) =>
          err ? reject(err) : resolve(),
        ),
      );
    } else {
      pack.entry({ name: e.name, type: e.type, mode, linkname: e.linkname });
    }
  }
  pack.finalize();
  return { format, tar: await out, paths };
}

function entryType(t: string | null | undefined): Entry['type'] | null {
  if (t === 'file' || t === 'contiguous-file') return 'file';
  if (t === 'directory' || t === 'symlink' || t === 'link') return t;
  return null;
}

async function readTar(buf: Buffer, gzipped: boolean): Promise<Entry[]> {
  const extract = tar.extract();
  let source: NodeJS.ReadableStream = Readable.from([buf]);
  if (gzipped) source = source.pipe(createGunzip());
  source.on('error', (err: Error) => extract.destroy(err));
  source.pipe(extract);
  const entries: Entry[] = [];
  let total = 0;
  for await (const entry of extract) {
    const h = entry.header;
    const type = entryType(h.type);
    if (type === null) {
      throw new ArchiveError(
        `archive entry "${h.name}" is a ${h.type ?? 'special file'}; only files, directories and links are allowed`,
      );
    }
    if (entries.length >= MAX_ENTRIES) throw new ArchiveError(`archive has more than ${MAX_ENTRIES} entries`);
    const e: Entry = { name: h.name, type, mode: h.mode ?? 0, linkname: h.linkname ?? undefined };
    if (type === 'file') {
      total += h.size ?? 0;
      if (total > MAX_UNPACKED_BYTES) throw new ArchiveError('archive unpacks to more than 512 MB');
      e.data = await collect(entry);
    } else entry.resume();
    entries.push(e);
  }
  return entries;
}

function readZip(buf: Buffer): Promise<Entry[]> {
  return new Promise((resolve, reject) => {
    // yauzl refuses absolute and ".." entry names itself (validateFileName); checkArchive checks again.
    yauzl.fromBuffer(buf, { lazyEntries: true, validateEntrySizes: true }, (err, zip) => {
      if (err || !zip) return reject(err ?? new Error('unreadable zip'));
      const entries: Entry[] = [];
      let total = 0;
      const fail = (e: Error) => {
        zip.close();
        reject(e);
      };
      zip.on('error', fail);
      zip.on('end', () => resolve(entries));
      zip.on('entry', (ze: yauzl.Entry) => {
        if (entries.length >= MAX_ENTRIES)
          return fail(new ArchiveError(`archive has more than ${MAX_ENTRIES} entries`));
        const unixMode = (ze.externalFileAttributes >>> 16) & 0o177777;
        const kind = unixMode & 0o170000;
        const isDir = ze.fileName.endsWith('/');
        if (isDir) {
          entries.push({ name: ze.fileName, type: 'directory', mode: unixMode & 0o777 });
          return zip.readEntry();
        }
        if (kind !== 0 && kind !== 0o100000 && kind !== 0o120000) {
          return fail(
            new ArchiveError(
              `archive entry "${ze.fileName}" is a special file; only files, directories and links are allowed`,
            ),
          );
        }
        total += ze.uncompressedSize;
        if (total > MAX_UNPACKED_BYTES) return fail(new ArchiveError('archive unpacks to more than 512 MB'));
        zip.openReadStream(ze, (e, stream) => {
          if (e || !stream) return fail(e ?? new Error('unreadable zip entry'));
          collect(stream).then((data) => {
            if (kind === 0o120000) {
              entries.push({ name: ze.fileName, type: 'symlink', mode: 0o777, linkname: data.toString('utf8') });
            } else {
              entries.push({ name: ze.fileName, type: 'file', mode: unixMode & 0o777, data });
            }
            zip.readEntry();
          }, fail);
        });
      });
      zip.readEntry();
    });
  });
}
