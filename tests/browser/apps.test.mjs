// Apps on their own origin (GATEHOUSE_PROXY_LISTEN) in a real browser: a signed-out
// visit to http://orders.localhost:PORT/ goes through the console's sign-in
// handshake and comes back with a cookie scoped to the app's host; the app sees who
// signed in and none of our cookies; a script the app serves cannot use the admin
// API with the user's session; signing out everywhere at the console ends the app's
// session too. User: alice (tenant-admin of acme).

import assert from 'node:assert/strict';
import {
  ACCOUNT_URL,
  BASE,
  DEMO_PASSWORD,
  LOGIN_PATH,
  assertLoginPage,
  browserTest,
  clickAndWaitForPage,
  submitLogin,
  where,
} from './lib.mjs';

const APPS_ORIGIN = process.env.GH_APPS_ORIGIN;
if (!APPS_ORIGIN) throw new Error('GH_APPS_ORIGIN is not set: run these tests through tests/browser/run.sh');
const APP_URL = `${APPS_ORIGIN}/items?x=1`;
const HANDSHAKE = `/v1/proxy/handshake?to=${encodeURIComponent(APP_URL)}`;

/** The JSON the upstream answered with, as the browser shows it. */
async function echoed(page) {
  return JSON.parse(await page.locator('body').innerText());
}

/** Signs in from a signed-out visit to the app; returns the app's answer. */
async function signInThroughTheApp(page) {
  const first = await page.goto(APP_URL);
  assert.equal(first.status(), 200, 'the sign-in page');
  assert.equal(where(page), `${LOGIN_PATH}?return_to=${encodeURIComponent(HANDSHAKE)}`,
    'the app sent the browser to the console, which asks it to sign in');
  await assertLoginPage(page);
  const response = await submitLogin(page, 'alice', DEMO_PASSWORD);
  assert.equal(page.url(), APP_URL, 'back at the app, on its own origin');
  assert.equal(response.status(), 200);
  return response;
}

browserTest('an app on its own origin signs in through the handshake and gets the user\'s identity', async ({ newPage }) => {
  const page = await newPage();
  const response = await signInThroughTheApp(page);
  assert.match((await response.allHeaders())['x-gatehouse-upstream-version'], /^v[12]$/);
  const seen = await echoed(page);
  assert.equal(seen.path, '/items', 'the app is served at its root, no prefix');
  assert.equal(seen.query, 'x=1');
  assert.equal(seen.headers['x-gatehouse-user'], 'alice');
  assert.equal(seen.headers['x-gatehouse-tenant'], 'acme');
  assert.equal(seen.forwarded['x-forwarded-prefix'], undefined);
  const cookieSeen = String(seen.cookie ?? '');
  assert.ok(!cookieSeen.includes('gh_app') && !cookieSeen.includes('gh_session'),
    `the app never sees our cookies: ${cookieSeen}`);

  // Each origin holds its own cookie: the session on the console's host, the
  // app's credential on the app's host only.
  const cookies = await page.context().cookies();
  const app = cookies.find((c) => c.name === 'gh_app');
  const session = cookies.find((c) => c.name === 'gh_session');
  assert.equal(app?.domain, 'orders.localhost');
  assert.equal(app?.httpOnly, true);
  assert.equal(session?.domain, new URL(BASE).hostname);
  assert.ok(!app.value.includes(session.value), 'the app holds no session token');

  // The app's own page script may POST to it.
  const posted = await page.evaluate(async () => {
    const r = await fetch('/items', { method: 'POST', body: '{"n":1}', headers: { 'content-type': 'application/json' } });
    return { status: r.status, body: await r.json() };
  });
  assert.equal(posted.status, 200);
  assert.equal(posted.body.headers['x-gatehouse-user'], 'alice');
});

browserTest('a script served by the app cannot call the admin API with the user\'s session', async ({ newPage }) => {
  const page = await newPage();
  await signInThroughTheApp(page);
  // alice is a tenant admin: from the console's own origin this read succeeds.
  const roles = `${BASE}/admin/api/v1/tenants/acme/roles`;
  const attempt = await page.evaluate(async (url) => {
    const out = {};
    try {
      const r = await fetch(url, { credentials: 'include' });
      out.read = { status: r.status, body: await r.text() };
    } catch (e) {
      out.read = { error: String(e) };
    }
    try {
      const r = await fetch(url, {
        method: 'POST',
        credentials: 'include',
        mode: 'no-cors',
        headers: { 'content-type': 'text/plain' },
        body: JSON.stringify({ name: 'planted-by-app' }),
      });
      out.write = { type: r.type };
    } catch (e) {
      out.write = { error: String(e) };
    }
    return out;
  }, roles);
  assert.ok(attempt.read.error, `the app's script read nothing: ${JSON.stringify(attempt.read)}`);
  // Nothing was written: the console itself (same origin) lists no such role.
  await page.goto(ACCOUNT_URL);
  const listed = await page.evaluate(async (url) => {
    const r = await fetch(url);
    return { status: r.status, body: await r.json() };
  }, roles);
  assert.equal(listed.status, 200, 'the console\'s own origin may read roles');
  const names = JSON.stringify(listed.body);
  assert.ok(!names.includes('planted-by-app'), names);
});

browserTest('signing out everywhere at the console ends the app\'s session', async ({ newPage }) => {
  const page = await newPage();
  await signInThroughTheApp(page);
  await page.goto(ACCOUNT_URL);
  await clickAndWaitForPage(page, page.getByRole('button', { name: 'Sign out everywhere', exact: true }));
  const again = await page.goto(APP_URL);
  assert.equal(again.status(), 200);
  assert.equal(where(page), `${LOGIN_PATH}?return_to=${encodeURIComponent(HANDSHAKE)}`,
    'the app\'s cookie died with the session: back through sign-in');
});
