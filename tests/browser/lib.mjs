// Shared helpers for the browser tests: one Chromium per test file, a fresh context
// (cookie jar) per simulated person or device, and the few steps a person takes on
// the sign-in and account pages. Everything goes through the rendered pages: locate
// by label or role, type, click, and read what is shown.
//
// run.sh provides the environment: GH_BASE_URL, GH_TENANT, GH_DEMO_PASSWORD,
// GH_RETURN_ORIGIN, GH_CHROMIUM, GH_RESULTS (failure screenshots), GH_HEADED.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { chromium } from 'playwright-core';

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run these tests through tests/browser/run.sh`);
  }
  return value;
}

export const BASE = required('GH_BASE_URL');
export const TENANT = process.env.GH_TENANT || 'acme';
export const DEMO_PASSWORD = required('GH_DEMO_PASSWORD');
export const RETURN_ORIGIN = required('GH_RETURN_ORIGIN');
const CHROMIUM = process.env.GH_CHROMIUM || '/usr/bin/chromium';
const RESULTS = process.env.GH_RESULTS || '';

export const LOGIN_PATH = `/t/${TENANT}/login`;
export const ACCOUNT_PATH = `/t/${TENANT}/account`;
export const LOGIN_URL = `${BASE}${LOGIN_PATH}`;
export const ACCOUNT_URL = `${BASE}${ACCOUNT_PATH}`;

/** What the pages say (web/templates, services/gateway/src/routes/browser.rs). */
export const TEXT = {
  badCredentials: 'Incorrect username or password.',
  signedOut: 'You have been signed out.',
  sessionEnded: 'The session was signed out.',
  thisDevice: 'this device',
  // "Too many sign-in attempts. Try again in 15 minutes." (human_wait in browser.rs)
  throttled: /^Too many sign-in attempts\. Try again in (\d+) (second|seconds|minute|minutes)\.$/,
};

/** An Android phone, so a second device is told apart on the account page. */
export const PHONE_USER_AGENT =
  'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) ' +
  'Chrome/130.0.0.0 Mobile Safari/537.36';

/** "2026-12-03 09:41 UTC" (format_time in pages.rs). */
export const TIME = /^\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC$/;

let browser;

before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: !process.env.GH_HEADED,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    timeout: 30_000,
  });
});

after(async () => {
  await browser?.close();
});

function slug(name) {
  return name.replace(/[^a-z0-9]+/gi, '-').replace(/^-|-$/g, '').slice(0, 80);
}

/**
 * A test with its own browser contexts. `fn` gets `newPage(options)`, which opens a
 * page in a new context (a separate person or device: own cookies). Every context is
 * closed afterwards; when the test fails, each open page is saved (PNG and HTML) to
 * GH_RESULTS first.
 */
export function browserTest(name, fn) {
  test(name, async (t) => {
    const contexts = [];
    const newPage = async (options = {}) => {
      const context = await browser.newContext(options);
      contexts.push(context);
      const page = await context.newPage();
      page.setDefaultTimeout(15_000);
      page.setDefaultNavigationTimeout(20_000);
      return page;
    };
    try {
      await fn({ newPage, t });
    } catch (error) {
      await saveArtifacts(name, contexts);
      throw error;
    } finally {
      for (const context of contexts) await context.close().catch(() => {});
    }
  });
}

async function saveArtifacts(name, contexts) {
  if (!RESULTS) return;
  try {
    await mkdir(RESULTS, { recursive: true });
    let n = 0;
    for (const context of contexts) {
      for (const page of context.pages()) {
        n += 1;
        const base = path.join(RESULTS, `${slug(name)}-${n}`);
        await page.screenshot({ path: `${base}.png`, fullPage: true }).catch(() => {});
        const html = await page.content().catch(() => '');
        await writeFile(`${base}.html`, `<!-- ${page.url()} -->\n${html}`).catch(() => {});
      }
    }
  } catch {
    // Artifacts are a courtesy; the test's own error is what matters.
  }
}

/**
 * Clicks `target` (a form button) and waits for the page it leads to: the next
 * document committed in the main frame, loaded. Returns that document's response
 * (after redirects), so callers can check the status a person's browser got.
 */
export async function clickAndWaitForPage(page, target) {
  const committed = page.waitForEvent('framenavigated', {
    predicate: (frame) => frame === page.mainFrame(),
  });
  const posted = page.waitForResponse(
    (r) => r.request().isNavigationRequest() && r.request().frame() === page.mainFrame(),
  );
  await target.click();
  let response = await posted;
  await committed;
  await page.waitForLoadState('load');
  // waitForResponse sees the first hop; follow redirects to the final answer.
  let request = response.request();
  while (response.status() >= 300 && response.status() < 400) {
    const next = await request.redirectedTo();
    if (!next) break;
    request = next;
    const r = await request.response();
    if (!r) break;
    response = r;
  }
  return response;
}

/** The path (and query) of the page's URL, for readable assertions. */
export function where(page) {
  const url = new URL(page.url());
  return url.origin === BASE ? `${url.pathname}${url.search}` : url.href;
}

/** Opens the tenant's login page (optionally with `return_to`) and checks it is one. */
export async function openLogin(page, { returnTo } = {}) {
  const url = returnTo === undefined
    ? LOGIN_URL
    : `${LOGIN_URL}?return_to=${encodeURIComponent(returnTo)}`;
  const response = await page.goto(url);
  assert.equal(response.status(), 200, `GET ${url}`);
  await assertLoginPage(page);
}

/** The page shows the sign-in form. */
export async function assertLoginPage(page) {
  await page.getByRole('heading', { level: 1, name: 'Sign in' }).waitFor();
  await page.getByLabel('Username').waitFor();
  await page.getByLabel('Password').waitFor();
}

/**
 * Types username and password into the form on the current page and presses
 * "Sign in". Returns the response to the final page (status 200 after a successful
 * redirect, 401 / 429 when the form comes back).
 */
export async function submitLogin(page, username, password) {
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(password);
  return clickAndWaitForPage(page, page.getByRole('button', { name: 'Sign in', exact: true }));
}

/** Opens the login page and signs in; asserts it worked and where it landed. */
export async function signIn(page, { username = 'alice', password = DEMO_PASSWORD, returnTo, expect = ACCOUNT_URL } = {}) {
  await openLogin(page, { returnTo });
  const response = await submitLogin(page, username, password);
  assert.equal(page.url(), expect, `after signing in as ${username} the browser is at ${where(page)}`);
  assert.equal(response.status(), 200, `status of ${page.url()}`);
  if (expect === ACCOUNT_URL) await assertAccountPage(page, username);
}

/** The page is the account page of `username`. */
export async function assertAccountPage(page, username) {
  const heading = page.getByRole('heading', { level: 1 });
  await heading.waitFor();
  assert.equal((await heading.innerText()).trim(), `Signed in as ${username}`);
}

/**
 * Visits the account page and asserts the browser is not signed in: it is sent
 * to the login page, which offers to come back to the account page.
 */
export async function assertSignedOut(page) {
  const response = await page.goto(ACCOUNT_URL);
  assert.equal(
    where(page),
    `${LOGIN_PATH}?return_to=${ACCOUNT_PATH}`,
    'a signed-out browser asking for the account page is sent to sign in',
  );
  assert.equal(response.status(), 200);
  await assertLoginPage(page);
}

/** The session cookie(s) the context holds for the gateway. */
export async function sessionCookies(page) {
  return (await page.context().cookies(BASE)).filter((c) => /gh_session$/.test(c.name));
}

/** Rows of the "Active sessions" table, each as { device, ip, created, lastSeen, current, row }. */
export async function sessionRows(page) {
  const table = page.getByRole('table');
  await table.waitFor();
  const rows = table.locator('tbody').getByRole('row');
  const out = [];
  for (const row of await rows.all()) {
    const cells = row.getByRole('cell');
    assert.equal(await cells.count(), 5, 'a session row has device, IP, signed in, last seen and a button');
    const deviceCell = (await cells.nth(0).innerText()).trim();
    const current = (await row.getByText(TEXT.thisDevice, { exact: true }).count()) === 1;
    out.push({
      device: deviceCell.replace(TEXT.thisDevice, '').trim(),
      ip: (await cells.nth(1).innerText()).trim(),
      created: (await cells.nth(2).innerText()).trim(),
      lastSeen: (await cells.nth(3).innerText()).trim(),
      current,
      row,
    });
  }
  return out;
}

/** Roles listed under the "Roles" heading. */
export async function roleNames(page) {
  const section = page.locator('section').filter({
    has: page.getByRole('heading', { level: 2, name: 'Roles' }),
  });
  await section.waitFor();
  return (await section.getByRole('listitem').allInnerTexts()).map((s) => s.trim());
}

/**
 * Starts from no sessions of `username`: signs in from a throw-away device and
 * presses "Sign out everywhere". Tests that count sessions call this first, since
 * earlier tests leave sessions behind (closing a browser does not end them).
 */
export async function signOutEverywhereFirst(newPage, username = 'alice') {
  const page = await newPage();
  await signIn(page, { username });
  await clickAndWaitForPage(page, page.getByRole('button', { name: 'Sign out everywhere' }));
  assert.equal(where(page), `${LOGIN_PATH}?signed_out=1`);
  await page.context().close();
}
