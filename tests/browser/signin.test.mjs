// Signing in and out in a real browser: the login form, where it leads, the
// session cookie, and the account page with its session list and sign-out buttons.
// Users: alice (tenant-admin of acme). Bob is left to throttle.test.mjs.

import assert from 'node:assert/strict';
import {
  ACCOUNT_PATH,
  ACCOUNT_URL,
  BASE,
  DEMO_PASSWORD,
  LOGIN_PATH,
  PHONE_USER_AGENT,
  RETURN_ORIGIN,
  TEXT,
  TIME,
  assertAccountPage,
  assertLoginPage,
  assertSignedOut,
  browserTest,
  clickAndWaitForPage,
  openLogin,
  roleNames,
  sessionCookies,
  sessionRows,
  signIn,
  signOutEverywhereFirst,
  submitLogin,
  where,
} from './lib.mjs';

browserTest('alice signs in at the login page and lands on her account page with her name and roles', async ({ newPage }) => {
  const page = await newPage();
  await openLogin(page);
  assert.match(await page.title(), /^Sign in · Acme Corporation$/);
  const response = await submitLogin(page, 'alice', DEMO_PASSWORD);
  assert.equal(page.url(), ACCOUNT_URL, `signed in, the browser is at ${where(page)}`);
  assert.equal(response.status(), 200);
  await assertAccountPage(page, 'alice');
  // The effective roles, as her tokens carry them (tenant-admin inherits member).
  assert.deepEqual(await roleNames(page), ['member', 'tenant-admin']);
  // No error or stale notice on a fresh account page.
  assert.equal(await page.getByRole('alert').count(), 0);
});

browserTest('a signed-out visit to the account page goes through sign-in and back to the account page', async ({ newPage }) => {
  const page = await newPage();
  await assertSignedOut(page); // at /t/acme/login?return_to=/t/acme/account
  const response = await submitLogin(page, 'alice', DEMO_PASSWORD);
  assert.equal(page.url(), ACCOUNT_URL);
  assert.equal(response.status(), 200);
  await assertAccountPage(page, 'alice');
});

browserTest('the session cookie is HttpOnly, SameSite=Lax, host-only and invisible to page scripts', async ({ newPage }) => {
  const page = await newPage();
  await signIn(page);
  const cookies = await page.context().cookies(BASE);
  const session = await sessionCookies(page);
  assert.equal(session.length, 1, `one session cookie among ${cookies.map((c) => c.name).join(', ')}`);
  const [cookie] = session;
  assert.equal(cookie.httpOnly, true, 'HttpOnly');
  assert.equal(cookie.sameSite, 'Lax', 'SameSite');
  assert.equal(cookie.domain, '127.0.0.1', 'host-only (no Domain attribute)');
  assert.equal(cookie.path, '/');
  assert.equal(cookie.expires, -1, 'a browser-session cookie (no Max-Age/Expires)');
  assert.ok(cookie.value.length >= 32, 'an opaque token');
  // Every cookie the gateway sets is out of reach of scripts and cross-site posts.
  for (const c of cookies) {
    assert.equal(c.httpOnly, true, `${c.name} is HttpOnly`);
    assert.equal(c.sameSite, 'Lax', `${c.name} is SameSite=Lax`);
  }
  const visible = await page.evaluate(() => document.cookie);
  assert.equal(visible, '', 'document.cookie shows nothing');
});

browserTest('a return_to on the tenant\'s allowed list is followed after sign-in', async ({ newPage }) => {
  const page = await newPage();
  const target = `${RETURN_ORIGIN}/orders/42?view=full`;
  await signIn(page, { returnTo: target, expect: target });
  // The allowed site (demo-upstream, echoing the request) really was reached.
  const body = await page.locator('body').innerText();
  assert.match(body, /"path":\s*"\/orders\/42"/, body);
  assert.match(body, /"query":\s*"view=full"/, body);
  // And the browser is signed in at the gateway.
  await page.goto(ACCOUNT_URL);
  await assertAccountPage(page, 'alice');
});

browserTest('a return_to that is not on the allowed list is ignored: sign-in lands on the account page', async ({ newPage }) => {
  for (const returnTo of [
    'https://evil.example/',
    '//evil.example/steal',
    `${RETURN_ORIGIN}@evil.example/`, // user-info trick: the host is evil.example
    'javascript:alert(document.domain)',
  ]) {
    const page = await newPage();
    await openLogin(page, { returnTo });
    const response = await submitLogin(page, 'alice', DEMO_PASSWORD);
    assert.equal(page.url(), ACCOUNT_URL, `return_to=${returnTo} led to ${page.url()}`);
    assert.equal(response.status(), 200);
    await assertAccountPage(page, 'alice');
  }
});

browserTest('the account page lists the sessions of both devices with details, the current one marked', async ({ newPage }) => {
  await signOutEverywhereFirst(newPage);
  const laptop = await newPage();
  const phone = await newPage({ userAgent: PHONE_USER_AGENT });
  await signIn(laptop);
  await signIn(phone);

  await laptop.reload();
  await assertAccountPage(laptop, 'alice');
  const rows = await sessionRows(laptop);
  assert.equal(rows.length, 2, `two sessions listed: ${JSON.stringify(rows.map(({ row, ...r }) => r))}`);
  for (const r of rows) {
    assert.equal(r.ip, '127.0.0.1', 'IP address');
    assert.match(r.created, TIME, 'signed in');
    assert.match(r.lastSeen, TIME, 'last seen');
    assert.equal(await r.row.getByRole('button', { name: 'Sign out this one' }).count(), 1);
  }
  const current = rows.filter((r) => r.current);
  assert.equal(current.length, 1, 'exactly one session is marked "this device"');
  assert.equal(current[0].device, 'Chrome on Linux', 'the laptop is the current session');
  assert.equal(rows.find((r) => !r.current).device, 'Chrome on Android', 'the phone is the other one');
  assert.equal(await laptop.getByRole('button', { name: 'Sign out everywhere' }).count(), 1);

  // The phone sees the same two sessions, with its own marked.
  await phone.reload();
  const phoneRows = await sessionRows(phone);
  assert.equal(phoneRows.length, 2);
  assert.deepEqual(
    phoneRows.filter((r) => r.current).map((r) => r.device),
    ['Chrome on Android'],
  );
});

browserTest('"Sign out this one" on the other session signs that device out and keeps this one', async ({ newPage }) => {
  await signOutEverywhereFirst(newPage);
  const laptop = await newPage();
  const phone = await newPage({ userAgent: PHONE_USER_AGENT });
  await signIn(laptop);
  await signIn(phone);

  await laptop.reload();
  const other = (await sessionRows(laptop)).filter((r) => !r.current);
  assert.equal(other.length, 1);
  assert.equal(other[0].device, 'Chrome on Android');
  const response = await clickAndWaitForPage(laptop, other[0].row.getByRole('button', { name: 'Sign out this one' }));
  assert.equal(where(laptop), `${ACCOUNT_PATH}?ended=1`);
  assert.equal(response.status(), 200);
  assert.equal((await laptop.getByRole('status').innerText()).trim(), TEXT.sessionEnded);
  const left = await sessionRows(laptop);
  assert.deepEqual(left.map((r) => [r.device, r.current]), [['Chrome on Linux', true]]);

  // The phone is signed out; the laptop still is.
  await assertSignedOut(phone);
  await laptop.goto(ACCOUNT_URL);
  await assertAccountPage(laptop, 'alice');
});

browserTest('"Sign out everywhere" ends the sessions of both devices, and signing in again works', async ({ newPage }) => {
  await signOutEverywhereFirst(newPage);
  const laptop = await newPage();
  const phone = await newPage({ userAgent: PHONE_USER_AGENT });
  await signIn(laptop);
  await signIn(phone);

  await laptop.reload();
  assert.equal((await sessionRows(laptop)).length, 2);
  const response = await clickAndWaitForPage(laptop, laptop.getByRole('button', { name: 'Sign out everywhere' }));
  assert.equal(where(laptop), `${LOGIN_PATH}?signed_out=1`);
  assert.equal(response.status(), 200);
  await assertLoginPage(laptop);
  assert.equal((await laptop.getByRole('status').innerText()).trim(), TEXT.signedOut);
  assert.deepEqual(await sessionCookies(laptop), [], 'the session cookie is removed');

  await assertSignedOut(laptop);
  await assertSignedOut(phone);

  // Right away, the person can sign in again, and only that session is listed.
  await signIn(laptop);
  const rows = await sessionRows(laptop);
  assert.deepEqual(rows.map((r) => [r.device, r.current]), [['Chrome on Linux', true]]);
});

browserTest('"Sign out" ends the session: the account page asks to sign in again', async ({ newPage }) => {
  const page = await newPage();
  await signIn(page);
  const response = await clickAndWaitForPage(page, page.getByRole('button', { name: 'Sign out', exact: true }));
  assert.equal(where(page), `${LOGIN_PATH}?signed_out=1`);
  assert.equal(response.status(), 200);
  await assertLoginPage(page);
  assert.equal((await page.getByRole('status').innerText()).trim(), TEXT.signedOut);
  assert.deepEqual(await sessionCookies(page), [], 'the session cookie is removed');

  // Back to the account page shows no account: it is fetched again (no-store) and
  // sends the browser to sign in.
  await page.goBack();
  await assertLoginPage(page);
  assert.equal(where(page), `${LOGIN_PATH}?return_to=${ACCOUNT_PATH}`);

  await assertSignedOut(page);
});

browserTest('a wrong password shows the generic error (401) and does not sign in', async ({ newPage }) => {
  const page = await newPage();
  await openLogin(page);
  const response = await submitLogin(page, 'alice', `${DEMO_PASSWORD}-wrong`);
  assert.equal(response.status(), 401);
  assert.equal(where(page), LOGIN_PATH);
  await assertLoginPage(page);
  assert.equal((await page.getByRole('alert').innerText()).trim(), TEXT.badCredentials);
  assert.equal(await page.getByLabel('Username').inputValue(), 'alice', 'the username is kept');
  assert.equal(await page.getByLabel('Password').inputValue(), '', 'the password is not echoed back');
  assert.deepEqual(await sessionCookies(page), [], 'no session cookie');

  // An unknown username gets exactly the same answer.
  const unknown = await submitLogin(page, 'mallory', DEMO_PASSWORD);
  assert.equal(unknown.status(), 401);
  assert.equal((await page.getByRole('alert').innerText()).trim(), TEXT.badCredentials);

  await assertSignedOut(page);

  // The form that came back works: the right password now signs in.
  await openLogin(page);
  const ok = await submitLogin(page, 'alice', `${DEMO_PASSWORD}-wrong`);
  assert.equal(ok.status(), 401);
  const good = await submitLogin(page, 'alice', DEMO_PASSWORD);
  assert.equal(good.status(), 200);
  assert.equal(page.url(), ACCOUNT_URL);
  await assertAccountPage(page, 'alice');
});

browserTest('a form on another site that posts "sign out everywhere" to us does not end the session (CSRF)', async ({ newPage }) => {
  const page = await newPage();
  await signIn(page);
  // An attacker's page, on an origin of its own, that submits the form at once.
  const evil = 'http://evil.test/';
  await page.route(evil, (route) =>
    route.fulfill({
      contentType: 'text/html',
      body: `<!doctype html><form method="post" action="${BASE}/t/acme/account/sessions/end-all">
               <input type="hidden" name="csrf" value="forged"></form>
             <script>document.forms[0].submit()</script>`,
    }),
  );
  const answered = page.waitForResponse((r) => r.url().startsWith(`${BASE}/t/acme/account/sessions/end-all`));
  await page.goto(evil);
  const response = await answered;
  // Refused either way: SameSite=Lax keeps the cookie off the cross-site post
  // (the gateway sees no session and sends the browser to sign in), or the
  // origin and CSRF checks answer 403. Never a sign-out.
  assert.ok([303, 403].includes(response.status()), `the forged post answered ${response.status()}`);
  await page.goto(ACCOUNT_URL);
  await assertAccountPage(page, 'alice');
  assert.equal((await sessionCookies(page)).length, 1, 'the session cookie is still there');
});
