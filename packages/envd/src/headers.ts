// A small implementation of the WHATWG Headers class for envd's own process.
//
// Connect handles every request with `Headers` objects. In Node 20 the first
// use of the global `Headers` loads Node's whole bundled fetch implementation
// (undici), which takes about 40 ms here: on every capsule's first RPC. envd
// uses Headers only as the header map Connect passes around, so main.ts
// installs this class as the global before anything touches it. It follows
// the standard's behaviour for what Connect uses: case-insensitive names,
// values combined with ", " (Set-Cookie kept apart), iteration in name order,
// and TypeErrors for invalid names or values.

type Init = Headers | Record<string, string> | Iterable<readonly [string, string]> | string[][];

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function name(n: string): string {
  const s = String(n);
  if (!TOKEN.test(s)) throw new TypeError(`Headers: invalid header name "${s}"`);
  return s.toLowerCase();
}

function value(v: string): string {
  // Leading and trailing HTTP whitespace is removed, as by the standard.
  const s = String(v).replace(/^[\t\n\r ]+|[\t\n\r ]+$/g, '');
  if (/[\0\r\n]/.test(s)) throw new TypeError('Headers: invalid header value');
  return s;
}

export class LightHeaders {
  private readonly map = new Map<string, string[]>();

  constructor(init?: Init) {
    if (init === undefined || init === null) return;
    if (typeof (init as Headers).forEach === 'function' && !Array.isArray(init)) {
      (init as Headers).forEach((v, k) => this.append(k, v));
      return;
    }
    if (typeof (init as Iterable<unknown>)[Symbol.iterator] === 'function') {
      for (const pair of init as Iterable<readonly string[]>) {
        if (pair.length !== 2) throw new TypeError('Headers: each header pair needs a name and a value');
        this.append(pair[0] as string, pair[1] as string);
      }
      return;
    }
    for (const [k, v] of Object.entries(init as Record<string, string>)) this.append(k, v);
  }

  append(n: string, v: string): void {
    const key = name(n);
    const list = this.map.get(key);
    if (list) list.push(value(v));
    else this.map.set(key, [value(v)]);
  }

  set(n: string, v: string): void {
    this.map.set(name(n), [value(v)]);
  }

  get(n: string): string | null {
    const list = this.map.get(name(n));
    return list ? list.join(', ') : null;
  }

  has(n: string): boolean {
    return this.map.has(name(n));
  }

  delete(n: string): void {
    this.map.delete(name(n));
  }

  getSetCookie(): string[] {
    return [...(this.map.get('set-cookie') ?? [])];
  }

  *entries(): IterableIterator<[string, string]> {
    for (const key of [...this.map.keys()].sort()) {
      const list = this.map.get(key);
      if (!list) continue;
      if (key === 'set-cookie') for (const v of list) yield [key, v];
      else yield [key, list.join(', ')];
    }
  }

  *keys(): IterableIterator<string> {
    for (const [k] of this.entries()) yield k;
  }

  *values(): IterableIterator<string> {
    for (const [, v] of this.entries()) yield v;
  }

  forEach(fn: (value: string, key: string, parent: LightHeaders) => void, thisArg?: unknown): void {
    for (const [k, v] of this.entries()) fn.call(thisArg, v, k, this);
  }

  [Symbol.iterator](): IterableIterator<[string, string]> {
    return this.entries();
  }

  get [Symbol.toStringTag](): string {
    return 'Headers';
  }
}

/** Installs LightHeaders as the global Headers unless Node's has already been loaded. */
export function installLightHeaders(): void {
  const desc = Object.getOwnPropertyDescriptor(globalThis, 'Headers');
  // Node defines the global as a lazy getter; a plain value means it is loaded (or replaced) already.
  if (desc && !desc.get) return;
  Object.defineProperty(globalThis, 'Headers', {
    value: LightHeaders,
    writable: true,
    configurable: true,
    enumerable: false,
  });
}
