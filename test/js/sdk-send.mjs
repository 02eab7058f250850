// Sends N mixed calls (track, identify, page, group, alias) through a real
// Node SDK to a running GoTrack, flushes, and prints a JSON report on
// standard output: the calls sent, each tagged with a unique seq, and the
// errors the SDK reported. The Go test (cmd/gotrack/sdk_e2e_test.go) then
// looks for every seq in the NDJSON output.
//
//   node sdk-send.mjs segment|rudder http://127.0.0.1:PORT WRITE_KEY N [ROUTE_PREFIX]
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const [sdk, host, writeKey, nArg, prefix = ''] = process.argv.slice(2);
const n = Number(nArg);
const calls = ['track', 'identify', 'page', 'group', 'alias'];
const sent = [];
const errors = [];

function message(i) {
  const call = calls[i % calls.length];
  const seq = `${sdk}-${i}`;
  const user = `user-${i % 37}`;
  const payload = { n: i, plan: i % 2 ? 'pro' : 'free', nested: { ok: true, list: [i, 'x'] } };
  switch (call) {
    case 'track':
      return { call, seq, msg: { userId: user, event: `Event ${i % 7}`, properties: { seq, ...payload } } };
    case 'identify':
      return { call, seq, msg: { userId: user, traits: { seq, ...payload } } };
    case 'page':
      return { call, seq, msg: { anonymousId: `anon-${i}`, name: `Page ${i % 5}`, properties: { seq, ...payload, url: `https://site.example/p/${i}?token=t${i}&k=${i}` } } };
    case 'group':
      return { call, seq, msg: { userId: user, groupId: `group-${i % 3}`, traits: { seq, ...payload } } };
    case 'alias':
      // An alias carries no properties: its previousId is the tag.
      return { call, seq, msg: { userId: user, previousId: seq } };
  }
}

async function viaSegment() {
  const { Analytics } = require('@segment/analytics-node');
  // path replaces any path of host, so a ROUTE_PREFIX goes into path.
  const a = new Analytics({ writeKey, host, path: `${prefix}/v1/batch`, flushAt: 50, flushInterval: 200, maxRetries: 5 });
  a.on('error', (err) => errors.push(String(err?.reason ?? err?.code ?? err)));
  for (let i = 0; i < n; i++) {
    const m = message(i);
    a[m.call](m.msg);
    sent.push(m);
  }
  await a.closeAndFlush({ timeout: 60000 });
}

async function viaRudder() {
  const Analytics = require('@rudderstack/rudder-sdk-node');
  const a = new Analytics(writeKey, {
    dataPlaneUrl: host + prefix, flushAt: 50, flushInterval: 200, retryCount: 5, logLevel: 'error',
    errorHandler: (err) => errors.push(String(err?.message ?? err)),
  });
  for (let i = 0; i < n; i++) {
    const m = message(i);
    a[m.call](m.msg, (err) => { if (err) errors.push(String(err.message ?? err)); });
    sent.push(m);
  }
  // flush() sends one batch of flushAt; call it until the queue is empty.
  while (a.queue.length > 0) {
    await a.flush();
  }
  await a.flush();
}

try {
  if (sdk === 'segment') await viaSegment();
  else if (sdk === 'rudder') await viaRudder();
  else throw new Error(`unknown sdk ${sdk}`);
} catch (err) {
  errors.push(String(err?.stack ?? err));
}
process.stdout.write(JSON.stringify({ sent: sent.map(({ call, seq, msg }) => ({ call, seq, msg })), errors }));
