// Pure parts of the SDK: error mapping, configuration, port-proxy hosts,
// the streamed multipart body.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  AuthenticationError,
  ConflictError,
  InvalidArgumentError,
  NotFoundError,
  RateLimitError,
  TimeoutError,
  UnavailableError,
  WrennError,
  capsuleHost,
  errorFromMessage,
  errorFromResponse,
  resolveConfig,
} from '../src/index.js';
import { multipartBody } from '../src/files.js';

const err = (code: string, message: string) => JSON.stringify({ error: { code, message } });

test('errorFromResponse picks the class from the code, then the status', () => {
  const cases: Array<[number, string, new (...a: never[]) => WrennError]> = [
    [404, err('not_found', 'capsule cl-x not found'), NotFoundError],
    [409, err('invalid_state', 'capsule is paused'), ConflictError],
    [409, err('conflict', 'exists'), ConflictError],
    [400, err('invalid_request', 'body.vcpus must be >= 1'), InvalidArgumentError],
    [401, err('unauthorized', 'invalid API key'), AuthenticationError],
    [429, err('rate_limited', 'slow down'), RateLimitError],
    [503, err('no_hosts_available', 'no online hosts'), UnavailableError],
    [504, err('deadline_exceeded', 'command timed out'), TimeoutError],
    // A code the SDK does not know: the status decides.
    [404, err('template_not_found', 'no template x'), NotFoundError],
    [418, err('teapot', 'short and stout'), WrennError],
  ];
  for (const [status, body, Cls] of cases) {
    const e = errorFromResponse(status, body);
    assert.ok(e instanceof Cls, `${status} ${body} → ${e.name}`);
    assert.ok(e instanceof WrennError);
    assert.equal(e.status, status);
    assert.equal(e.message, (JSON.parse(body) as { error: { message: string } }).error.message);
    assert.equal(e.code, (JSON.parse(body) as { error: { code: string } }).error.code);
  }
});

test('errorFromResponse copes with bodies that are not the error shape', () => {
  const html = errorFromResponse(502, '<html>Bad Gateway</html>');
  assert.ok(html instanceof UnavailableError);
  assert.equal(html.code, 'internal_error');
  assert.equal(html.message, 'request failed with HTTP 502');

  const empty = errorFromResponse(404, '');
  assert.ok(empty instanceof NotFoundError);
  assert.equal(empty.code, 'http_404');

  const text = errorFromResponse(400, 'bad thing');
  assert.ok(text instanceof InvalidArgumentError);
  assert.equal(text.message, 'bad thing');
});

test('errorFromMessage classifies WebSocket error frames', () => {
  assert.ok(errorFromMessage("process with tag 'x' not found") instanceof NotFoundError);
  assert.ok(errorFromMessage('capsule cl-x is not running (paused)') instanceof ConflictError);
  assert.ok(errorFromMessage('command timed out after 1 s') instanceof TimeoutError);
  assert.ok(errorFromMessage('anything', 'invalid_state') instanceof ConflictError);
  const other = errorFromMessage('something broke');
  assert.equal(other.constructor, WrennError);
  assert.equal(other.code, 'stream_error');
});

test('resolveConfig: options win over the environment, which wins over defaults', () => {
  const env = { WRENN_API_KEY: 'wrn_env', WRENN_BASE_URL: 'https://api.example.com/api/' };
  const fromEnv = resolveConfig({}, env);
  assert.equal(fromEnv.apiKey, 'wrn_env');
  assert.equal(fromEnv.baseUrl, 'https://api.example.com/api');
  assert.equal(fromEnv.domain, 'api.example.com');
  assert.equal(fromEnv.requestTimeoutMs, 60_000);

  const fromOpts = resolveConfig({ apiKey: 'wrn_opt', baseUrl: 'http://127.0.0.1:9000', domain: 'wrenn.test' }, env);
  assert.equal(fromOpts.apiKey, 'wrn_opt');
  assert.equal(fromOpts.baseUrl, 'http://127.0.0.1:9000');
  assert.equal(fromOpts.domain, 'wrenn.test');

  const defaults = resolveConfig({}, { WRENN_API_KEY: 'k' });
  assert.equal(defaults.baseUrl, 'http://localhost:8000');
  assert.equal(defaults.domain, 'localhost:8000');
});

test('resolveConfig rejects a missing key and bad URLs', () => {
  assert.throws(
    () => resolveConfig({}, {}),
    (e: unknown) => e instanceof AuthenticationError && /WRENN_API_KEY/.test(e.message),
  );
  assert.throws(() => resolveConfig({ baseUrl: 'not a url' }, { WRENN_API_KEY: 'k' }), InvalidArgumentError);
  assert.throws(() => resolveConfig({ baseUrl: 'ftp://x' }, { WRENN_API_KEY: 'k' }), InvalidArgumentError);
  assert.throws(() => resolveConfig({ requestTimeoutMs: 0 }, { WRENN_API_KEY: 'k' }), InvalidArgumentError);
});

test('capsuleHost builds {port}-{id}.{domain} and checks the port', () => {
  assert.equal(capsuleHost('cl-abc', 8080, 'localhost:8000'), '8080-cl-abc.localhost:8000');
  assert.equal(capsuleHost('cl-abc', 1, 'app.wrenn.dev'), '1-cl-abc.app.wrenn.dev');
  for (const bad of [0, 65536, 1.5, -1, NaN]) {
    assert.throws(() => capsuleHost('cl-abc', bad, 'd'), InvalidArgumentError, String(bad));
  }
});

test('multipartBody puts the path field first and frames the file bytes exactly', async () => {
  async function* data() {
    yield new Uint8Array([0, 1, 2]);
    yield 'abc';
    yield new Uint8Array(0);
  }
  const parts: Buffer[] = [];
  for await (const c of multipartBody('BOUND', '/tmp/dir/a "b".bin', data())) parts.push(Buffer.from(c));
  const body = Buffer.concat(parts);
  const head =
    '--BOUND\r\nContent-Disposition: form-data; name="path"\r\n\r\n/tmp/dir/a "b".bin\r\n' +
    '--BOUND\r\nContent-Disposition: form-data; name="file"; filename="a _b_.bin"\r\n' +
    'Content-Type: application/octet-stream\r\n\r\n';
  assert.deepEqual(
    body,
    Buffer.concat([Buffer.from(head), Buffer.from([0, 1, 2]), Buffer.from('abc'), Buffer.from('\r\n--BOUND--\r\n')]),
  );
});
