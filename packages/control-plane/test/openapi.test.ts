// The OpenAPI document covers every route; the docs page is served locally.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import YAML from 'yaml';
import { OAuthRegistry } from '../src/auth/oauth/provider.js';
import { startTestServer, type Json, type TestServer } from './helpers.js';

let s: TestServer;
before(async () => {
  s = await startTestServer({ deps: { oauthProviders: new OAuthRegistry() } });
});
after(async () => {
  await s?.close();
});

/** `/v1/teams/:id` → `/v1/teams/{id}` */
function openapiPath(url: string): string {
  return url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}

describe('OpenAPI', () => {
  test('every registered route is in /openapi.yaml; only the docs routes and the dashboard page are hidden', async () => {
    const res = await fetch(`${s.url}/openapi.yaml`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type')!, /yaml/);
    const text = await res.text();
    assert.doesNotMatch(text, /[*&]a\d+\b/, 'plain YAML, no anchors');
    const doc = YAML.parse(text) as Json;
    assert.equal(doc.openapi, '3.1.0');
    assert.equal(doc.info.version, '0.0.0-test');

    const routes = s.app.wrenn.routes;
    const visible = routes.filter((r) => !r.hidden);
    assert.ok(visible.length >= 20, `only ${visible.length} visible routes`);
    const missing = visible.filter((r) => !doc.paths?.[openapiPath(r.url)]?.[r.method.toLowerCase()]);
    assert.deepEqual(missing, [], 'routes missing from the OpenAPI document');
    const hidden = routes.filter((r) => r.hidden).map((r) => r.url);
    assert.ok(
      hidden.every((u) => u === '/' || u === '/openapi.yaml' || u === '/docs' || u.startsWith('/docs/')),
      hidden.join(' '),
    );

    // And nothing in the document that is not served.
    const served = new Set(visible.map((r) => `${r.method.toLowerCase()} ${openapiPath(r.url)}`));
    for (const [p, ops] of Object.entries(doc.paths as Record<string, Record<string, unknown>>)) {
      for (const m of Object.keys(ops)) if (m !== 'parameters') assert.ok(served.has(`${m} ${p}`), `${m} ${p}`);
    }

    // Every operation is described, and its error responses use the shared Error schema.
    for (const [p, ops] of Object.entries(doc.paths as Record<string, Record<string, Json>>)) {
      for (const [m, op] of Object.entries(ops)) {
        assert.ok(op.summary, `${m} ${p} has no summary`);
        for (const [status, r] of Object.entries(op.responses as Record<string, Json>)) {
          if (Number(status) >= 400) {
            // The shared Error schema, or one that extends it with details (e.g. the capsules blocking a delete).
            const ref = r.content['application/json'].schema.$ref as string;
            assert.ok(
              ref === '#/components/schemas/Error' || ref === '#/components/schemas/HostHasCapsulesError',
              `${m} ${p} ${status}: ${ref}`,
            );
          }
        }
      }
    }
    assert.ok(doc.components.schemas.Error);
    assert.ok(doc.components.schemas.AuthResponse);
    assert.deepEqual(Object.keys(doc.components.securitySchemes).sort(), ['apiKeyAuth', 'bearerAuth', 'hostTokenAuth']);
    assert.deepEqual(doc.paths['/v1/hosts/{id}/heartbeat'].post.security, [{ hostTokenAuth: [] }]);
    assert.deepEqual(doc.paths['/v1/api-keys/current'].get.security, [{ apiKeyAuth: [] }]);
    assert.deepEqual(doc.paths['/v1/me'].get.security, [{ bearerAuth: [] }]);
  });

  test('/docs is an interactive page whose assets are served here, not from a CDN', async () => {
    const page = await fetch(`${s.url}/docs/`);
    assert.equal(page.status, 200);
    const html = await page.text();
    assert.match(html, /swagger-ui/i);
    const refs = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
    assert.ok(refs.length > 0);
    for (const ref of refs) {
      assert.doesNotMatch(ref, /^(https?:)?\/\//, `external asset ${ref}`);
      const asset = await fetch(new URL(ref, `${s.url}/docs/`));
      assert.equal(asset.status, 200, ref);
    }
    const init = await fetch(`${s.url}/docs/static/swagger-initializer.js`);
    assert.equal(init.status, 200);
    const code = (await init.text())
      .split('\n')
      .filter((l) => !l.trim().startsWith('//'))
      .join('\n');
    assert.doesNotMatch(code, /https?:\/\//, 'the page loads nothing from elsewhere');
    // Swagger UI's default online validator would call out to a third party: it is off.
    assert.match(code, /validatorUrl: null/);
  });
});
