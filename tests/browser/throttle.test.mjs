// Login throttling as a person meets it: wrong passwords for one username from one
// browser until the form says to wait, and how long, in words. Uses bob only (no
// other test signs in as bob), so the lockout it causes touches nothing else; the
// run's Redis prefix is fresh, so it starts from no failures.

import assert from 'node:assert/strict';
import {
  ACCOUNT_URL,
  DEMO_PASSWORD,
  LOGIN_PATH,
  TEXT,
  assertAccountPage,
  assertLoginPage,
  assertSignedOut,
  browserTest,
  openLogin,
  sessionCookies,
  submitLogin,
  where,
} from './lib.mjs';

// docs/throttling.md: 5 failures per (username, IP) per 15 minutes; allow slack
// should the defaults change, but not unbounded guessing.
const MAX_ATTEMPTS = 10;

browserTest('repeated wrong passwords end in the throttle message (429) with a readable wait', async ({ newPage, t }) => {
  const page = await newPage();
  await openLogin(page);

  let response;
  let attempts = 0;
  for (attempts = 1; attempts <= MAX_ATTEMPTS; attempts += 1) {
    response = await submitLogin(page, 'bob', `not-the-password-${attempts}`);
    await assertLoginPage(page);
    if (response.status() === 429) break;
    assert.equal(response.status(), 401, `attempt ${attempts}`);
    assert.equal((await page.getByRole('alert').innerText()).trim(), TEXT.badCredentials, `attempt ${attempts}`);
  }
  assert.ok(attempts > 1, 'the first wrong password is an ordinary failure, not a lockout');
  assert.equal(response.status(), 429, `still not throttled after ${MAX_ATTEMPTS} wrong passwords`);

  // What the person reads: the form again, with the wait in words.
  assert.equal(where(page), LOGIN_PATH);
  const message = (await page.getByRole('alert').innerText()).trim();
  const match = TEXT.throttled.exec(message);
  assert.ok(match, `throttle message: ${JSON.stringify(message)}`);
  t.diagnostic(`throttled at attempt ${attempts}: ${message}`);
  const amount = Number(match[1]);
  assert.ok(amount >= 1, message);
  if (amount === 1) assert.match(match[2], /^(second|minute)$/, `singular: ${message}`);
  else assert.match(match[2], /s$/, `plural: ${message}`);
  // The words agree with the Retry-After the browser got.
  const retryAfter = Number(await response.headerValue('retry-after'));
  assert.ok(retryAfter >= 1, `Retry-After: ${retryAfter}`);
  const shown = match[2].startsWith('minute') ? amount * 60 : amount;
  assert.ok(
    shown >= retryAfter && shown - retryAfter < 60,
    `"${message}" vs Retry-After ${retryAfter}`,
  );
  assert.equal(await page.getByLabel('Username').inputValue(), 'bob', 'the username is kept');
  assert.deepEqual(await sessionCookies(page), [], 'no session cookie');

  // While throttled even the right password is refused the same way.
  const again = await submitLogin(page, 'bob', DEMO_PASSWORD);
  assert.equal(again.status(), 429);
  assert.match((await page.getByRole('alert').innerText()).trim(), TEXT.throttled);
  await assertSignedOut(page);

  // The lockout is bob's: alice signs in from the same browser.
  await openLogin(page);
  const alice = await submitLogin(page, 'alice', DEMO_PASSWORD);
  assert.equal(alice.status(), 200);
  assert.equal(page.url(), ACCOUNT_URL);
  await assertAccountPage(page, 'alice');
});
