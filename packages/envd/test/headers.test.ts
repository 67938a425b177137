// LightHeaders (envd's stand-in for the global Headers) against Node's own Headers.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { LightHeaders } from '../src/headers.js';

type H = { [K in keyof Headers]: Headers[K] };

function both(init?: ConstructorParameters<typeof Headers>[0]): [H, H] {
  return [new Headers(init), new LightHeaders(init as never) as unknown as H];
}

function same(a: H, b: H): void {
  assert.deepEqual([...b.entries()], [...a.entries()]);
  const fa: string[] = [];
  const fb: string[] = [];
  a.forEach((v, k) => fa.push(`${k}=${v}`));
  b.forEach((v, k) => fb.push(`${k}=${v}`));
  assert.deepEqual(fb, fa);
  assert.deepEqual([...b.keys()], [...a.keys()]);
  assert.deepEqual([...b.values()], [...a.values()]);
  assert.deepEqual(b.getSetCookie(), a.getSetCookie());
}

describe('LightHeaders', () => {
  it('behaves like Headers for get/set/append/has/delete and iteration', () => {
    const [a, b] = both();
    for (const h of [a, b]) {
      h.append('Content-Type', 'application/json');
      h.append('X-Multi', 'one');
      h.append('x-multi', ' two ');
      h.set('Authorization', 'Basic abc');
      h.append('Set-Cookie', 'a=1');
      h.append('set-cookie', 'b=2');
      h.append('Accept', 'x');
      h.delete('accept');
    }
    same(a, b);
    for (const n of ['content-type', 'X-MULTI', 'authorization', 'set-cookie', 'accept', 'missing']) {
      assert.equal(b.get(n), a.get(n), n);
      assert.equal(b.has(n), a.has(n), n);
    }
  });

  it('accepts the same initialisers', () => {
    same(...both({ 'Content-Type': 'text/plain', 'X-A': 'b' }));
    same(
      ...both([
        ['x-a', '1'],
        ['X-A', '2'],
        ['b', '3'],
      ]),
    );
    same(...both(new Headers({ 'x-from': 'headers', 'set-cookie': 'c=3' })));
    const [a, b] = both({ k: 'v' });
    same(a, new LightHeaders(b as never) as unknown as H);
  });

  it('rejects invalid names and values like Headers', () => {
    for (const bad of [
      ['bad name', 'v'],
      ['ok', 'line\nbreak'],
      ['', 'v'],
      ['n\u00e9', 'v'],
    ] as const) {
      assert.throws(() => new Headers([[bad[0], bad[1]]]), TypeError);
      assert.throws(() => new LightHeaders([[bad[0], bad[1]]]), TypeError);
    }
  });
});
