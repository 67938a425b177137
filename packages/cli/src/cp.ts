// `wrenn files cp`: streamed both ways, never holding a whole file in memory.
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { Capsule } from '@wrenn/sdk';
import { parseCopy } from './parse.js';

export async function copy(src: string, dst: string): Promise<void> {
  const c = parseCopy(src, dst);
  const capsule = await Capsule.connect(c.capsuleId, { autoResume: false });
  if (c.direction === 'upload') return upload(capsule, c.local, c.remote);
  return download(capsule, c.remote, c.local);
}

async function upload(capsule: Capsule, local: string, remote: string): Promise<void> {
  let target = remote;
  if (local === '-') {
    if (target.endsWith('/')) throw new Error('reading stdin: give a file name in the capsule, not a directory');
    return capsule.files.write(target, process.stdin);
  }
  const st = await fs.promises.stat(local).catch((e: NodeJS.ErrnoException) => {
    throw new Error(`${local}: ${e.code === 'ENOENT' ? 'no such file' : e.message}`);
  });
  if (!st.isFile()) throw new Error(`${local}: not a regular file (directories are not copied)`);
  if (target.endsWith('/')) target += path.basename(local);
  await capsule.files.write(target, fs.createReadStream(local));
}

async function download(capsule: Capsule, remote: string, local: string): Promise<void> {
  const body = await capsule.files.read(remote, { format: 'stream' });
  const source = Readable.fromWeb(body as unknown as WebReadableStream<Uint8Array>);
  if (local === '-') return pipeline(source, process.stdout);
  let target = local;
  const st = await fs.promises.stat(target).catch(() => null);
  if (st?.isDirectory() || target.endsWith('/') || target.endsWith(path.sep)) {
    target = path.join(target, path.posix.basename(remote));
  }
  try {
    await pipeline(source, fs.createWriteStream(target));
  } catch (err) {
    // No half-written file left behind.
    await fs.promises.rm(target, { force: true });
    throw err;
  }
}
