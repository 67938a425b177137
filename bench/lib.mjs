// Helpers shared by the benchmark scripts.

/** The p-th percentile of xs (nearest rank). */
export const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

export const fmt = (ms) => `${ms.toFixed(1)} ms`;

/** JSON calls to a testkit platform's API with its admin team's API key; a non-2xx answer throws. */
export function apiCaller(p) {
  return async function call(method, url, body) {
    const res = await fetch(p.baseUrl + url, {
      method,
      headers: { 'x-api-key': p.apiKey, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${url}: ${res.status} ${text}`);
    return text ? JSON.parse(text) : undefined;
  };
}
