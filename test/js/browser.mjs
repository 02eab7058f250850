// Drives Debian's chromium (headless, fresh profiles) through pages served
// by the Go test: gotrack.js scenarios, then Segment's analytics-next
// pointed at GoTrack. It prints a JSON report of what the pages saw; the Go
// test (cmd/gotrack/browser_e2e_test.go) checks GoTrack's NDJSON output.
//
//   node browser.mjs /usr/bin/chromium http://SITE http://GOTRACK PROFILE_DIR
import fs from 'node:fs';
import path from 'node:path';
import puppeteer from 'puppeteer-core';

const [chromium, site, , profiles] = process.argv.slice(2);
const report = { errors: [], checks: {} };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const flushWait = 1600; // gotrack.js batches for up to a second

// leave navigates away before closing, so that whatever a page still holds
// is flushed on its pagehide however slow the machine is.
async function leave(page) {
  await page.goto(site + '/blank.html', { waitUntil: 'load' });
  await sleep(300);
  await page.close();
}

async function launch(name, prefs) {
  const dir = path.join(profiles, name);
  fs.mkdirSync(path.join(dir, 'Default'), { recursive: true });
  if (prefs) fs.writeFileSync(path.join(dir, 'Default', 'Preferences'), JSON.stringify(prefs));
  return puppeteer.launch({
    executablePath: chromium,
    pipe: true,
    ignoreDefaultArgs: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', `--user-data-dir=${dir}`, '--remote-debugging-pipe', 'about:blank'],
  });
}

async function open(browser, url, before) {
  const ctx = await browser.createBrowserContext();
  const page = await ctx.newPage();
  page.on('pageerror', (e) => report.errors.push(`${url}: ${e.message}`));
  if (before) await page.evaluateOnNewDocument(before);
  await page.goto(site + url, { waitUntil: 'load' });
  return page;
}

// gotrackReady waits until the script has loaded and replayed the snippet's queue.
const gotrackReady = (page) => page.waitForFunction(() => window.gotrack && !window.gotrack.q, { timeout: 10000 });
const queued = (page) => page.evaluate(() => JSON.parse(localStorage.getItem('gotrack_q') || '[]').length);

async function gotrackScenarios(browser) {
  // A pageview on load, and a track call queued by the snippet before the script loaded.
  let page = await open(browser, '/s/load/app.html?track=queued');
  await gotrackReady(page);
  await sleep(flushWait);
  report.checks.loadCookies = (await page.cookies()).length + (await page.evaluate(() => document.cookie.length));
  report.checks.loadVisitorStored = await page.evaluate(() => localStorage.getItem('gotrack_vid'));
  await leave(page);

  // Track calls.
  page = await open(browser, '/s/track/app.html');
  await gotrackReady(page);
  await page.evaluate(() => {
    for (let i = 0; i < 3; i++) gotrack('track', 'signup', { plan: 'pro', i });
  });
  await leave(page);

  // Single-page navigation: push, a repeated manual pageview, replace with
  // the same URL, push, back. Four pageviews: app.html, first, second, first.
  page = await open(browser, '/s/spa/app.html');
  await gotrackReady(page);
  await page.evaluate(async () => {
    history.pushState({}, '', '/s/spa/first');
    gotrack('pageview');
    history.replaceState({}, '', '/s/spa/first');
    history.pushState({}, '', '/s/spa/second');
    const back = new Promise((r) => window.addEventListener('popstate', r, { once: true }));
    history.back();
    await back;
  });
  await leave(page);

  // Flush on page hide: a call made just before leaving the page, well
  // inside the batching second.
  page = await open(browser, '/s/hide/app.html');
  await gotrackReady(page);
  await sleep(flushWait);
  await page.evaluate(() => gotrack('track', 'leaving', { at: 'pagehide' }));
  await leave(page);

  // The last resort: a browser with neither sendBeacon nor fetch gets
  // one pixel request per event.
  page = await open(browser, '/s/pixel/app.html', () => {
    delete Navigator.prototype.sendBeacon;
    window.fetch = undefined;
  });
  await gotrackReady(page);
  await page.evaluate(() => gotrack('track', 'px_call', { color: 'blue' }));
  await page.waitForResponse((r) => r.url().includes('/px.gif?') && r.url().includes('px_call'), { timeout: 10000 });
  await leave(page);

  // Global Privacy Control, which Chromium does not implement: emulated.
  page = await open(browser, '/s/gpc/app.html?persist=1', () => {
    Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', { get: () => true });
  });
  await gotrackReady(page);
  await page.evaluate(() => gotrack('track', 'gpc_call', {}));
  report.checks.gpcStorage = await page.evaluate(() => localStorage.length);
  await leave(page);

  // ROUTE_PREFIX: the script is loaded from under the prefix and, given no
  // endpoint, sends there.
  page = await open(browser, '/s/prefix/app.html');
  await gotrackReady(page);
  await page.evaluate(() => gotrack('track', 'prefixed', {}));
  await leave(page);

  // Offline, then back online: the calls wait in localStorage, then each
  // is sent once.
  page = await open(browser, '/s/offline/app.html?persist=1');
  await gotrackReady(page);
  await sleep(flushWait);
  await page.setOfflineMode(true);
  report.checks.offlineOnLine = await page.evaluate(() => navigator.onLine);
  await page.evaluate(() => {
    for (let i = 0; i < 5; i++) gotrack('track', 'offline_call', { i });
  });
  await page.waitForFunction(() => JSON.parse(localStorage.getItem('gotrack_q') || '[]').length >= 5, { timeout: 10000 }).catch(() => {});
  report.checks.offlineQueued = await queued(page);
  await page.setOfflineMode(false);
  await page.waitForFunction(() => !localStorage.getItem('gotrack_q'), { timeout: 10000 });
  report.checks.offlineQueuedAfter = await queued(page);
  report.checks.offlineVisitorStored = await page.evaluate(() => !!localStorage.getItem('gotrack_vid'));
  await leave(page);

  // GoTrack answers 503 while the page is online: the calls wait in
  // localStorage, then, once GoTrack is back, each is sent once.
  page = await open(browser, '/s/down/app.html');
  await gotrackReady(page);
  await sleep(flushWait);
  await fetch(site + '/flaky-down');
  report.checks.downOnLine = await page.evaluate(() => navigator.onLine);
  await page.evaluate(() => {
    for (let i = 0; i < 5; i++) gotrack('track', 'down_call', { i });
  });
  await page.waitForFunction(() => JSON.parse(localStorage.getItem('gotrack_q') || '[]').length >= 5, { timeout: 10000 }).catch(() => {});
  report.checks.downQueued = await queued(page);
  await fetch(site + '/flaky-up');
  await page.waitForFunction(() => !localStorage.getItem('gotrack_q'), { timeout: 20000 }).catch(() => {});
  report.checks.downQueuedAfter = await queued(page);
  await leave(page);

  // The retry queue's bounds: at most 100 events, for at most 24 hours.
  page = await open(browser, '/s/bound/app.html');
  await gotrackReady(page);
  await sleep(flushWait);
  await page.setOfflineMode(true);
  await page.evaluate(() => {
    for (let i = 0; i < 120; i++) gotrack('track', 'bound_call', { i });
  });
  // Wait for the last call to reach the queue (after the batching second).
  await page.waitForFunction(() => {
    const q = JSON.parse(localStorage.getItem('gotrack_q') || '[]');
    return q.length > 0 && q[q.length - 1].properties.i === 119;
  }, { timeout: 10000 }).catch(() => {});
  report.checks.boundQueued = await queued(page);
  report.checks.boundOldest = await page.evaluate(() => JSON.parse(localStorage.getItem('gotrack_q') || '[{}]')[0].properties?.i);
  await page.evaluate(() => {
    const msg = (event, ageMs) => ({
      type: 'track', event, anonymousId: 'a', messageId: crypto.randomUUID(),
      timestamp: new Date(Date.now() - ageMs).toISOString(), context: { page: { url: location.href } },
    });
    localStorage.setItem('gotrack_q', JSON.stringify([msg('stale', 25 * 3600 * 1000), msg('fresh', 23 * 3600 * 1000)]));
  });
  await page.setOfflineMode(false);
  await page.waitForFunction(() => !localStorage.getItem('gotrack_q'), { timeout: 10000 });
  await leave(page);
}

async function dntScenario() {
  // A profile with "Send a Do Not Track request" on, as a user would set it.
  const browser = await launch('dnt', { enable_do_not_track: true });
  try {
    const page = await open(browser, '/s/dnt/app.html?persist=1');
    await gotrackReady(page);
    report.checks.dntNavigator = await page.evaluate(() => navigator.doNotTrack);
    await page.evaluate(() => gotrack('track', 'dnt_call', {}));
    await sleep(flushWait);
    report.checks.dntStorage = await page.evaluate(() => localStorage.length);
    await page.goto(site + '/blank.html', { waitUntil: 'load' }); // a page hide too
    await sleep(500);
    await page.close();
  } finally {
    await browser.close();
  }
}

async function analyticsNextScenarios(browser) {
  // The standard delivery: page() and track() each POSTed to /v1/p and /v1/t.
  let page = await open(browser, '/ajs/std/page.html');
  await page.waitForFunction(() => window.ajsDone === true || window.ajsError, { timeout: 15000 });
  report.checks.ajsStdError = await page.evaluate(() => window.ajsError || null);
  await leave(page);

  // The batching delivery, and a track() made as the page unloads; the
  // next page of the site loads the library again.
  page = await open(browser, '/ajs/unload/page.html?batching=1');
  await page.waitForFunction(() => window.ajsReady === true || window.ajsError, { timeout: 15000 });
  report.checks.ajsUnloadError = await page.evaluate(() => window.ajsError || null);
  await page.evaluate(() => {
    window.ajs.track('Unloading', { when: 'pagehide' });
    location.href = '/ajs/unload/after.html?batching=1';
  });
  await page.waitForFunction(() => location.pathname.endsWith('/after.html') && window.ajsReady === true, { timeout: 15000 });
  await sleep(1000);
  await leave(page);
}

const browser = await launch('main');
try {
  await gotrackScenarios(browser);
  await analyticsNextScenarios(browser);
} catch (err) {
  report.errors.push(String(err && err.stack ? err.stack : err));
} finally {
  await browser.close();
}
try {
  await dntScenario();
} catch (err) {
  report.errors.push(String(err && err.stack ? err.stack : err));
}
process.stdout.write(JSON.stringify(report));
