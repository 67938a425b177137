// The Connect RPC side of envd (process.Process, filesystem.Filesystem).
// server.ts loads this module on the first RPC only: evaluating the protobuf
// descriptors and the Connect router is most of envd's start-up work, and the
// first calls a capsule gets (/health, /init) do not need it.
import { connectNodeAdapter } from '@connectrpc/connect-node';
import { Process } from '@wrenn/contracts/gen/process/process_pb';
import { Filesystem } from '@wrenn/contracts/gen/filesystem/filesystem_pb';
import { FilesystemService } from './filesystem/service.js';
import { ProcessService } from './process/service.js';
import type { Req, Res } from './http/routes.js';
import type { EnvdState } from './state.js';

export interface Rpc {
  handle(req: Req, res: Res): void;
  close(): void;
}

export function createRpc(state: EnvdState): Rpc {
  const processes = new ProcessService(state);
  const filesystem = new FilesystemService(state);
  const handler = connectNodeAdapter({
    routes: (router) => {
      router.service(Process, processes.impl());
      router.service(Filesystem, filesystem.impl());
    },
    // No compression: envd talks over a local link, where gzip of process
    // output only costs CPU (it cut stream throughput by about 3x).
    acceptCompression: [],
  });
  return {
    handle: (req, res) => handler(req, res),
    close: () => {
      filesystem.close();
      processes.killAll();
    },
  };
}
