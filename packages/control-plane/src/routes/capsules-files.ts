// /v1/capsules/{id}/files/*: upload, download, list, mkdir, remove.
//
// files/write buffers the upload (100 MiB cap, so a too-large file changes
// nothing); files/stream/write and files/stream/read pipe through in 64 KiB
// chunks with no size cap and never hold the file in memory.
import { Readable } from 'node:stream';
import { Type } from '@sinclair/typebox';
import multipart from '@fastify/multipart';
import { create } from '@bufbuild/protobuf';
import {
  WriteFileStreamRequestSchema,
  type FileEntry as AgentFileEntry,
  type WriteFileStreamRequest,
} from '@wrenn/contracts/gen/hostagent/v1/hostagent_pb';
import type { FastifyRequest } from 'fastify';
import type { App, RouteContext } from '../server.js';
import { ApiError, badRequest } from '../errors.js';
import { teamOf } from '../auth/guards.js';
import { errorResponses } from './schemas.js';
import { CAPSULE_SECURITY, FileEntry, IdParams, LIMITS, ListDirRequest, PathRequest } from '../capsules/schemas.js';
import type { CapsuleService, LiveCapsule } from '../capsules/service.js';
import { agentError } from '../capsules/agent-errors.js';

export const CHUNK = 64 * 1024;
const FILE_TIMEOUT_MS = 10 * 60_000;

const UploadBody = Type.Object({
  path: Type.String({ description: 'Destination path inside the capsule (parent directories are created)' }),
  file: Type.String({ format: 'binary', description: 'The content' }),
});

const OctetStream = {
  description: 'The file',
  content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } },
};

function fileEntryJson(e: AgentFileEntry) {
  return {
    name: e.name,
    path: e.path,
    type: (['file', 'directory', 'symlink'].includes(e.type) ? e.type : 'unknown') as
      'file' | 'directory' | 'symlink' | 'unknown',
    size: Number(e.size),
    mode: e.mode,
    permissions: e.permissions,
    owner: e.owner,
    group: e.group,
    modified_at: Number(e.modifiedAt),
    symlink_target: e.symlinkTarget || null,
  };
}

function checkPath(path: string | undefined): string {
  if (path === undefined || path === '') throw badRequest('a "path" field is required');
  if (path.length > LIMITS.maxPath) throw badRequest(`path is longer than ${LIMITS.maxPath} characters`);
  if (path.includes('\0')) throw badRequest('path must not contain NUL bytes');
  return path;
}

/** Splits a byte stream into messages of at most 64 KiB, after the meta message. */
async function* uploadMessages(
  wireId: string,
  path: string,
  source: AsyncIterable<Buffer> | Buffer[],
): AsyncGenerator<WriteFileStreamRequest> {
  yield create(WriteFileStreamRequestSchema, { content: { case: 'meta', value: { sandboxId: wireId, path } } });
  for await (const buf of source) {
    for (let off = 0; off < buf.length; off += CHUNK) {
      yield create(WriteFileStreamRequestSchema, { content: { case: 'chunk', value: buf.subarray(off, off + CHUNK) } });
    }
  }
}

function requireMultipart(request: FastifyRequest): void {
  if (!request.isMultipart()) {
    throw new ApiError(415, 'unsupported_media_type', 'send multipart/form-data with a "path" field and a "file" part');
  }
}

export function capsuleFileRoutes(app: App, ctx: RouteContext, svc: CapsuleService): void {
  const auth = ctx.guards.requireApiKeyOrUser;
  const security = CAPSULE_SECURITY;
  const tags = ['capsules'];

  async function upload(live: LiveCapsule, path: string, source: AsyncIterable<Buffer> | Buffer[]): Promise<void> {
    await svc.onLive(live, (l) =>
      l.client.writeFileStream(uploadMessages(l.wireId, path, source), { timeoutMs: FILE_TIMEOUT_MS }),
    );
  }

  // Multipart parsing only for the two upload routes.
  void app.register(async (sub) => {
    await sub.register(multipart, { limits: { fields: 4, files: 1, parts: 6, fieldSize: 64 * 1024 } });
    // The body schema documents the multipart form; the parts are checked in the handler.
    const acceptAll = () => () => true;

    sub.post(
      '/v1/capsules/:id/files/write',
      {
        preHandler: auth,
        validatorCompiler: acceptAll,
        schema: {
          summary: 'Upload a file (up to 100 MiB)',
          description:
            'multipart/form-data with a `path` field and a `file` part. Larger files are refused (413) before ' +
            'anything is written; use files/stream/write for them.',
          tags,
          security,
          consumes: ['multipart/form-data'],
          params: IdParams,
          body: UploadBody,
          response: {
            204: Type.Null({ description: 'Written' }),
            ...errorResponses(400, 401, 403, 404, 409, 413, 415, 503),
          },
        },
      },
      async (request, reply) => {
        requireMultipart(request);
        if (Number(request.headers['content-length']) > LIMITS.maxUploadBytes + 1024 * 1024) {
          throw tooLarge();
        }
        const live = await svc.running(teamOf(request).id, (request.params as { id: string }).id);
        let path: string | undefined;
        let data: Buffer | undefined;
        try {
          for await (const part of request.parts({ limits: { fileSize: LIMITS.maxUploadBytes } })) {
            if (part.type === 'field') {
              if (part.fieldname === 'path') path = String(part.value);
            } else if (part.fieldname === 'file') {
              data = await part.toBuffer();
            } else {
              throw badRequest(`unexpected file part "${part.fieldname}"; the file goes in "file"`);
            }
          }
        } catch (err) {
          if ((err as { code?: string }).code === 'FST_REQ_FILE_TOO_LARGE') throw tooLarge();
          throw err;
        }
        checkPath(path);
        if (!data) throw badRequest('a "file" part is required');
        await upload(live, path!, [data]);
        return reply.code(204).send(null);
      },
    );

    sub.post(
      '/v1/capsules/:id/files/stream/write',
      {
        preHandler: auth,
        validatorCompiler: acceptAll,
        schema: {
          summary: 'Upload a file of any size (streamed)',
          description:
            'multipart/form-data whose `path` field comes before the `file` part. The file is passed on in 64 KiB ' +
            'chunks as it arrives, never held in memory.',
          tags,
          security,
          consumes: ['multipart/form-data'],
          params: IdParams,
          body: UploadBody,
          response: {
            204: Type.Null({ description: 'Written' }),
            ...errorResponses(400, 401, 403, 404, 409, 415, 503),
          },
        },
      },
      async (request, reply) => {
        requireMultipart(request);
        const live = await svc.running(teamOf(request).id, (request.params as { id: string }).id);
        let path: string | undefined;
        let wrote = false;
        for await (const part of request.parts({ limits: { fileSize: Infinity } })) {
          if (part.type === 'field') {
            if (part.fieldname === 'path') path = String(part.value);
            continue;
          }
          if (part.fieldname !== 'file')
            throw badRequest(`unexpected file part "${part.fieldname}"; the file goes in "file"`);
          if (path === undefined) throw badRequest('the "path" field must come before the "file" part');
          await upload(live, checkPath(path), part.file);
          wrote = true;
        }
        if (!wrote) throw badRequest('a "file" part is required');
        return reply.code(204).send(null);
      },
    );
  });

  app.post(
    '/v1/capsules/:id/files/read',
    {
      preHandler: auth,
      schema: {
        summary: 'Download a file (up to 64 MiB)',
        description: 'Larger files: files/stream/read.',
        tags,
        security,
        params: IdParams,
        body: PathRequest,
        response: { 200: OctetStream, ...errorResponses(400, 401, 403, 404, 409, 503) },
      },
    },
    async (request, reply) => {
      const live = await svc.running(teamOf(request).id, request.params.id);
      let res;
      try {
        res = await live.client.readFile(
          { sandboxId: live.wireId, path: request.body.path },
          { timeoutMs: FILE_TIMEOUT_MS },
        );
      } catch (err) {
        const e = agentError(err, live.host.id);
        if (e.code === 'resource_exhausted') throw new ApiError(413, 'too_large', e.message);
        throw e;
      } finally {
        await svc.touch(live.row.id);
      }
      return reply
        .type('application/octet-stream')
        .send(Buffer.from(res.content.buffer, res.content.byteOffset, res.content.byteLength));
    },
  );

  app.post(
    '/v1/capsules/:id/files/stream/read',
    {
      preHandler: auth,
      schema: {
        summary: 'Download a file of any size (streamed)',
        description: 'Sent in chunks as it is read, never held in memory.',
        tags,
        security,
        params: IdParams,
        body: PathRequest,
        response: { 200: OctetStream, ...errorResponses(400, 401, 403, 404, 409, 503) },
      },
    },
    async (request, reply) => {
      const live = await svc.running(teamOf(request).id, request.params.id);
      const abort = new AbortController();
      const stream = live.client.readFileStream(
        { sandboxId: live.wireId, path: request.body.path },
        { signal: abort.signal },
      );
      const it = stream[Symbol.asyncIterator]();
      // The first chunk decides between a JSON error (missing file…) and a 200 stream.
      let first: IteratorResult<{ chunk: Uint8Array }>;
      try {
        first = await it.next();
      } catch (err) {
        await svc.touch(live.row.id);
        throw agentError(err, live.host.id);
      }
      const log = request.log;
      async function* body(): AsyncGenerator<Uint8Array> {
        try {
          if (first.done) return;
          yield first.value.chunk;
          for (let next = await it.next(); !next.done; next = await it.next()) yield next.value.chunk;
        } catch (err) {
          // Headers are sent: all that is left is to cut the response short.
          log.warn({ err }, 'capsule file download failed mid-stream');
          throw err;
        } finally {
          abort.abort();
          await svc.touch(live.row.id);
        }
      }
      const out = Readable.from(body(), { objectMode: false });
      request.raw.on('close', () => {
        if (!out.readableEnded) out.destroy();
      });
      return reply.type('application/octet-stream').send(out);
    },
  );

  app.post(
    '/v1/capsules/:id/files/list',
    {
      preHandler: auth,
      schema: {
        summary: 'List a directory',
        tags,
        security,
        params: IdParams,
        body: ListDirRequest,
        response: {
          200: Type.Object({ entries: Type.Array(Type.Ref(FileEntry)) }, { title: 'ListDirResponse' }),
          ...errorResponses(400, 401, 403, 404, 409, 503),
        },
      },
    },
    async (request) => {
      const res = await svc.onRunning(teamOf(request).id, request.params.id, (live) =>
        live.client.listDir(
          { sandboxId: live.wireId, path: request.body.path, depth: request.body.depth ?? 1 },
          { timeoutMs: 60_000 },
        ),
      );
      return { entries: res.entries.map(fileEntryJson) };
    },
  );

  app.post(
    '/v1/capsules/:id/files/mkdir',
    {
      preHandler: auth,
      schema: {
        summary: 'Create a directory (and its parents)',
        description: 'An existing path is a 409.',
        tags,
        security,
        params: IdParams,
        body: PathRequest,
        response: {
          200: Type.Object({ entry: Type.Ref(FileEntry) }, { title: 'MakeDirResponse' }),
          ...errorResponses(400, 401, 403, 404, 409, 503),
        },
      },
    },
    async (request) => {
      const res = await svc.onRunning(teamOf(request).id, request.params.id, (live) =>
        live.client.makeDir({ sandboxId: live.wireId, path: request.body.path }, { timeoutMs: 60_000 }),
      );
      if (!res.entry) throw new ApiError(502, 'agent_error', 'the host did not describe the new directory');
      return { entry: fileEntryJson(res.entry) };
    },
  );

  app.post(
    '/v1/capsules/:id/files/remove',
    {
      preHandler: auth,
      schema: {
        summary: 'Remove a file or a directory (recursively)',
        tags,
        security,
        params: IdParams,
        body: PathRequest,
        response: { 204: Type.Null({ description: 'Removed' }), ...errorResponses(400, 401, 403, 404, 409, 503) },
      },
    },
    async (request, reply) => {
      await svc.onRunning(teamOf(request).id, request.params.id, (live) =>
        live.client.removePath({ sandboxId: live.wireId, path: request.body.path }, { timeoutMs: 60_000 }),
      );
      return reply.code(204).send(null);
    },
  );
}

function tooLarge(): ApiError {
  return new ApiError(
    413,
    'too_large',
    `the file is larger than ${LIMITS.maxUploadBytes / 1024 / 1024} MiB; use files/stream/write for large files`,
  );
}
