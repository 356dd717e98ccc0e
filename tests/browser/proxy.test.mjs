// The reverse proxy (/svc/{service}/...) in a real browser: a signed-out visit to
// a proxied app goes through the tenant's sign-in and back; the app (demo-upstream,
// both orders versions) then sees who signed in and never our session cookie; a
// same-origin POST from a page passes and a form posted from another origin does not.
// User: alice (tenant-admin of acme, who may do anything with orders).

import assert from 'node:assert/strict';
import {
  BASE,
  DEMO_PASSWORD,
  LOGIN_PATH,
  RETURN_ORIGIN,
  assertLoginPage,
  browserTest,
  submitLogin,
  where,
} from './lib.mjs';

const APP_PATH = '/svc/orders/items?x=1';

/** The JSON the upstream answered with, as the browser shows it. */
async function echoed(page) {
  return JSON.parse(await page.locator('body').innerText());
}

browserTest('a signed-out visit to a proxied app goes through sign-in and back, and the app sees who signed in', async ({ newPage }) => {
  const page = await newPage();
  const first = await page.goto(`${BASE}${APP_PATH}`);
  assert.equal(first.status(), 200, 'the sign-in page');
  assert.equal(where(page), `${LOGIN_PATH}?return_to=${encodeURIComponent(APP_PATH)}`);
  await assertLoginPage(page);
  const response = await submitLogin(page, 'alice', DEMO_PASSWORD);
  assert.equal(where(page), APP_PATH, 'back at the app after signing in');
  assert.equal(response.status(), 200);
  const version = (await response.allHeaders())['x-gatehouse-upstream-version'];
  assert.match(version, /^v[12]$/, 'the answer names the version that served it');
  const seen = await echoed(page);
  assert.equal(seen.path, '/items', 'the /svc/orders prefix is removed');
  assert.equal(seen.query, 'x=1');
  assert.equal(seen.headers['x-gatehouse-user'], 'alice');
  assert.equal(seen.headers['x-gatehouse-tenant'], 'acme');
  assert.match(seen.headers['x-gatehouse-roles'], /tenant-admin/);
  assert.equal(seen.forwarded['x-forwarded-prefix'], '/svc/orders');
  assert.ok(!String(seen.cookie ?? '').includes('gh_session'), `the app never sees our session cookie: ${seen.cookie}`);

  // The app's own page script may POST to it (same origin: the browser sends Origin).
  const posted = await page.evaluate(async () => {
    const r = await fetch('/svc/orders/items', { method: 'POST', body: '{"n":1}', headers: { 'content-type': 'application/json' } });
    return { status: r.status, body: await r.json() };
  });
  assert.equal(posted.status, 200);
  assert.equal(posted.body.method, 'POST');
  assert.equal(posted.body.body_bytes, 7);
  assert.equal(posted.body.headers['x-gatehouse-user'], 'alice');
});

browserTest('a form posted to a proxied app from another origin is refused, though the browser sends the cookie', async ({ newPage }) => {
  const page = await newPage();
  await page.goto(`${BASE}${APP_PATH}`);
  await submitLogin(page, 'alice', DEMO_PASSWORD);
  assert.equal(where(page), APP_PATH);
  // Another origin on the same site (another port of 127.0.0.1): SameSite=Lax
  // does not stop the cookie here, so the gateway's origin check must.
  await page.goto(`${RETURN_ORIGIN}/elsewhere`);
  const [refused] = await Promise.all([
    page.waitForResponse((r) => r.url().startsWith(`${BASE}/svc/`)),
    page.evaluate((action) => {
      const form = document.createElement('form');
      form.method = 'POST';
      form.action = action;
      document.body.appendChild(form);
      form.submit();
    }, `${BASE}/svc/orders/items`),
  ]);
  assert.equal(refused.status(), 403);
  const problem = await refused.json();
  assert.equal(problem.title !== undefined, true);
  assert.match(problem.detail, /own origin/);
});
