// Capsules end to end, part two: 100 MiB files streamed both ways through the
// control plane (whose memory must not grow with the file), and the
// `{port}-{capsule id}.{domain}` port proxy for HTTP and WebSocket traffic.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import WebSocket from 'ws';
import { startPlatform, waitFor, type Platform, type TeamCredentials } from '@wrenn/testkit';
import { api } from './capsules-helpers.js';

const MiB = 1024 * 1024;

/** Peak and current resident memory of the control plane process (found by its listening port). */
function cpMemory(baseUrl: string): { peakKb: number; rssKb: number } {
  const port = new URL(baseUrl).port;
  const out = execFileSync('ss', ['-Htlnp', `sport = :${port}`]).toString();
  const pid = /pid=(\d+)/.exec(out)?.[1];
  assert.ok(pid, `no process listens on ${port}: ${out}`);
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)![1]);
  return { peakKb: kb('VmHWM'), rssKb: kb('VmRSS') };
}

/** Deterministic content: block i of 1 MiB is a fixed random block with i written into its first bytes. */
function* blocks(total: number): Generator<Buffer> {
  const base = createHash('sha512').update('wrenn').digest();
  const block = Buffer.alloc(MiB);
  for (let off = 0; off < MiB; off += base.length) base.copy(block, off);
  for (let i = 0; i * MiB < total; i++) {
    const b = Buffer.from(block.subarray(0, Math.min(MiB, total - i * MiB)));
    b.writeUInt32BE(i, 0);
    yield b;
  }
}

function sha256Of(total: number): string {
  const h = createHash('sha256');
  for (const b of blocks(total)) h.update(b);
  return h.digest('hex');
}

/** A request through the port proxy: the Host header names the port and the capsule. */
function viaProxy(
  baseUrl: string,
  host: string,
  opts: { method?: string; path?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  const u = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: u.hostname,
        port: u.port,
        method: opts.method ?? 'GET',
        path: opts.path ?? '/',
        headers: { host, ...opts.headers },
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

// A tiny HTTP + WebSocket echo server run inside the capsule with the Node binary envd uses.
const ECHO_SERVER = `
const http = require('http'), crypto = require('crypto');
const srv = http.createServer((req, res) => {
  let body = '';
  req.on('data', (d) => (body += d));
  req.on('end', () => {
    if (req.url === '/redirect') { res.writeHead(302, { location: 'http://' + process.env.ADDR + '/landed' }); return res.end(); }
    res.writeHead(200, { 'content-type': 'application/json', 'x-echo': 'yes' });
    res.end(JSON.stringify({ method: req.method, url: req.url, body, host: req.headers.host,
      authorization: req.headers.authorization || null, apiKey: req.headers['x-api-key'] || null }));
  });
});
srv.on('upgrade', (req, socket) => {
  const accept = crypto.createHash('sha1').update(req.headers['sec-websocket-key'] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
  socket.write('HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Accept: ' + accept + '\\r\\n\\r\\n');
  let buf = Buffer.alloc(0);
  socket.on('data', (d) => {
    // Small masked frames only: unmask, and send text back unmasked and upper-cased.
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 6 && buf.length >= 6 + (buf[1] & 0x7f)) {
      const len = buf[1] & 0x7f, mask = buf.subarray(2, 6), data = Buffer.alloc(len);
      for (let i = 0; i < len; i++) data[i] = buf[6 + i] ^ mask[i % 4];
      const op = buf[0] & 0x0f;
      buf = buf.subarray(6 + len);
      if (op === 8) return socket.end();
      const text = Buffer.from(data.toString().toUpperCase());
      socket.write(Buffer.concat([Buffer.from([0x81, text.length]), text]));
    }
  });
});
srv.listen(8080, '0.0.0.0');
`;

describe('capsule files (streamed) and port proxy', () => {
  let p: Platform;
  let call: ReturnType<typeof api>;
  let other: TeamCredentials;
  let id: string;

  before(async () => {
    p = await startPlatform({ prefix: 'cpb', subnetBase: '10.241', agents: 1 });
    call = api(p.baseUrl, { apiKey: p.apiKey });
    other = await p.newTeam();
    const r = await call('POST', '/v1/capsules', {});
    assert.equal(r.status, 201, JSON.stringify(r.body));
    id = r.body.id;
  });

  after(async () => {
    await p?.stop();
  });

  it('streams 100 MiB in and out without holding it in the control plane', async (t) => {
    const size = 100 * MiB;
    const boundary = '----wrenn-test-boundary';
    const head =
      `--${boundary}\r\ncontent-disposition: form-data; name="path"\r\n\r\n/root/big.bin\r\n` +
      `--${boundary}\r\ncontent-disposition: form-data; name="file"; filename="big.bin"\r\n` +
      'content-type: application/octet-stream\r\n\r\n';
    const tail = `\r\n--${boundary}--\r\n`;
    const gen = blocks(size);
    let sentHead = false;
    let sentTail = false;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (!sentHead) {
          sentHead = true;
          return controller.enqueue(Buffer.from(head));
        }
        const next = gen.next();
        if (!next.done) return controller.enqueue(next.value);
        if (!sentTail) {
          sentTail = true;
          controller.enqueue(Buffer.from(tail));
        }
        controller.close();
      },
    });
    const before = cpMemory(p.baseUrl);
    const up = await fetch(`${p.baseUrl}/v1/capsules/${id}/files/stream/write`, {
      method: 'POST',
      headers: { 'x-api-key': p.apiKey, 'content-type': `multipart/form-data; boundary=${boundary}` },
      body,
      duplex: 'half',
    } as RequestInit);
    assert.equal(up.status, 204, await up.text());

    const sum = await call('POST', `/v1/capsules/${id}/exec`, {
      cmd: '/bin/sh',
      args: ['-c', 'stat -c %s /root/big.bin; sha256sum /root/big.bin'],
    });
    const expected = sha256Of(size);
    assert.equal(sum.body.stdout, `${size}\n${expected}  /root/big.bin\n`);

    const down = await fetch(`${p.baseUrl}/v1/capsules/${id}/files/stream/read`, {
      method: 'POST',
      headers: { 'x-api-key': p.apiKey, 'content-type': 'application/json' },
      body: JSON.stringify({ path: '/root/big.bin' }),
    });
    assert.equal(down.status, 200);
    assert.equal(down.headers.get('content-type'), 'application/octet-stream');
    const h = createHash('sha256');
    let got = 0;
    for await (const chunk of down.body as unknown as AsyncIterable<Uint8Array>) {
      h.update(chunk);
      got += chunk.length;
    }
    assert.equal(got, size);
    assert.equal(h.digest('hex'), expected);

    const afterMem = cpMemory(p.baseUrl);
    // Holding the file would add at least its 100 MiB; streaming costs buffers and garbage only (~40 MiB here).
    const grewMb = (afterMem.peakKb - before.peakKb) / 1024;
    t.diagnostic(`control plane peak RSS ${before.peakKb >> 10} → ${afterMem.peakKb >> 10} MiB`);
    assert.ok(grewMb < 80, `the control plane's peak memory grew by ${grewMb.toFixed(0)} MiB for a 100 MiB file`);

    // Errors before the first byte are JSON, not a broken 200.
    const missing = await call('POST', `/v1/capsules/${id}/files/stream/read`, { path: '/root/nope.bin' });
    assert.equal(missing.status, 404);
    assert.equal(missing.body.error.code, 'not_found');
    const dir = await call('POST', `/v1/capsules/${id}/files/stream/read`, { path: '/root' });
    assert.ok(dir.status >= 400 && dir.status < 500, JSON.stringify(dir.body));
  });

  it('proxies HTTP to a port inside the capsule, authenticated and team-scoped', async () => {
    const write = new FormData();
    write.append('path', '/root/echo.js');
    write.append('file', new Blob([ECHO_SERVER]), 'echo.js');
    const w = await fetch(`${p.baseUrl}/v1/capsules/${id}/files/write`, {
      method: 'POST',
      headers: { 'x-api-key': p.apiKey },
      body: write,
    });
    assert.equal(w.status, 204);
    const capsule = (await call('GET', `/v1/capsules/${id}`)).body;
    const bg = await call('POST', `/v1/capsules/${id}/exec`, {
      cmd: '/opt/wrenn/node',
      args: ['/root/echo.js'],
      background: true,
      tag: 'echo',
      envs: { ADDR: `${capsule.host_ip}:8080` },
    });
    assert.equal(bg.status, 202, JSON.stringify(bg.body));
    const host = `8080-${id}.capsules.wrenn.test:${new URL(p.baseUrl).port}`;

    const r = await waitFor('the echo server', async () => {
      const res = await viaProxy(p.baseUrl, host, {
        method: 'POST',
        path: '/some/path?q=1',
        headers: { 'x-api-key': p.apiKey, authorization: 'Bearer app-token', 'content-type': 'text/plain' },
        body: 'payload',
      });
      return res.status === 200 && res;
    });
    assert.equal(r.headers['x-echo'], 'yes');
    const echoed = JSON.parse(r.body);
    assert.deepEqual(echoed, {
      method: 'POST',
      url: '/some/path?q=1',
      body: 'payload',
      host,
      // The user's own Authorization reaches the app; the API key never does.
      authorization: 'Bearer app-token',
      apiKey: null,
    });

    // A session JWT works too, and is not passed on.
    const withJwt = await viaProxy(p.baseUrl, host, { headers: { authorization: `Bearer ${p.adminJwt}` } });
    assert.equal(withJwt.status, 200);
    assert.equal(JSON.parse(withJwt.body).authorization, null);

    // Internal absolute redirects become paths on the public host.
    const redirect = await viaProxy(p.baseUrl, host, { path: '/redirect', headers: { 'x-api-key': p.apiKey } });
    assert.equal(redirect.status, 302);
    assert.equal(redirect.headers.location, '/landed');

    const anon = await viaProxy(p.baseUrl, host);
    assert.equal(anon.status, 401);
    const theirs = await viaProxy(p.baseUrl, host, { headers: { 'x-api-key': other.apiKey } });
    assert.equal(theirs.status, 404);
    assert.equal(JSON.parse(theirs.body).error.code, 'capsule_not_found');
    const closed = await viaProxy(p.baseUrl, `8081-${id}.capsules.wrenn.test`, { headers: { 'x-api-key': p.apiKey } });
    assert.equal(closed.status, 502);
    assert.match(JSON.parse(closed.body).error.message, /port 8081/);
    const badPort = await viaProxy(p.baseUrl, `99999-${id}.capsules.wrenn.test`, {
      headers: { 'x-api-key': p.apiKey },
    });
    assert.equal(badPort.status, 400);
    const unknown = await viaProxy(p.baseUrl, '8080-cl-0000000000000000000000000.capsules.wrenn.test', {
      headers: { 'x-api-key': p.apiKey },
    });
    assert.equal(unknown.status, 404);
    // A stock server: python3 -m http.server.
    const page = new FormData();
    page.append('path', '/root/www/index.html');
    page.append('file', new Blob(['<h1>from the capsule</h1>']), 'index.html');
    const pw = await fetch(`${p.baseUrl}/v1/capsules/${id}/files/write`, {
      method: 'POST',
      headers: { 'x-api-key': p.apiKey },
      body: page,
    });
    assert.equal(pw.status, 204);
    const py = await call('POST', `/v1/capsules/${id}/exec`, {
      cmd: 'python3',
      args: ['-m', 'http.server', '8000', '--directory', '/root/www'],
      background: true,
    });
    assert.equal(py.status, 202, JSON.stringify(py.body));
    const served = await waitFor('python http.server', async () => {
      const res = await viaProxy(p.baseUrl, `8000-${id}.capsules.wrenn.test`, { headers: { 'x-api-key': p.apiKey } });
      return res.status === 200 && res;
    });
    assert.equal(served.body, '<h1>from the capsule</h1>');

    // Other hosts still reach the API.
    assert.equal((await call('GET', `/v1/capsules/${id}`)).status, 200);
  });

  it('proxies WebSocket upgrades both ways', async () => {
    const port = new URL(p.baseUrl).port;
    const ws = new WebSocket(`ws://127.0.0.1:${port}/socket`, {
      headers: { host: `8080-${id}.capsules.wrenn.test:${port}`, 'x-api-key': p.apiKey },
    });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const replies: string[] = [];
    ws.on('message', (d) => replies.push(String(d)));
    ws.send('hello');
    ws.send('capsule');
    await waitFor('the echoes', async () => replies.length === 2, 10_000);
    assert.deepEqual(replies, ['HELLO', 'CAPSULE']);
    ws.close();

    const refused = new WebSocket(`ws://127.0.0.1:${port}/socket`, {
      headers: { host: `8080-${id}.capsules.wrenn.test:${port}`, 'x-api-key': other.apiKey },
    });
    const status = await new Promise<number>((resolve) => {
      refused.once('unexpected-response', (_req, res) => resolve(res.statusCode!));
      refused.once('error', () => resolve(-1));
    });
    assert.equal(status, 404);
  });

  it('refuses the proxy for a paused capsule (409) and serves it again after resume', async () => {
    const host = `8080-${id}.capsules.wrenn.test`;
    assert.equal((await call('POST', `/v1/capsules/${id}/pause`)).status, 200);
    const paused = await viaProxy(p.baseUrl, host, { headers: { 'x-api-key': p.apiKey } });
    assert.equal(paused.status, 409);
    assert.match(JSON.parse(paused.body).error.message, /paused/);
    assert.equal((await call('POST', `/v1/capsules/${id}/resume`)).status, 200);
    const back = await viaProxy(p.baseUrl, host, { headers: { 'x-api-key': p.apiKey } });
    assert.equal(back.status, 200);
    assert.equal((await call('DELETE', `/v1/capsules/${id}`)).status, 204);
    const gone = await viaProxy(p.baseUrl, host, { headers: { 'x-api-key': p.apiKey } });
    assert.equal(gone.status, 409);
  });
});
