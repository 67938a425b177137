// Small assertions shared by the host agent's RPC tests.
import assert from 'node:assert/strict';
import { Code, ConnectError } from '@connectrpc/connect';

/** Awaits a call that must fail with `code` (and a message matching `re`); returns the error. */
export async function rejects(p: Promise<unknown>, code: Code, re?: RegExp): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof ConnectError, `expected a ConnectError, got ${String(err)}`);
    assert.equal(Code[err.code], Code[code], `code of: ${err.message}`);
    if (re) assert.match(err.rawMessage, re);
    return err;
  }
  assert.fail(`expected ${Code[code]}, but the call succeeded`);
}

export const text = (b: Uint8Array) => Buffer.from(b).toString();

/** An Exec request body running a shell script. */
export const sh = (script: string) => ({ cmd: '/bin/sh', args: ['-c', script] });
