// gotrack.js: GoTrack's first-party browser tracker. No dependencies, no
// cookies. It sends Segment-format batches to GoTrack's /v1/batch, the same
// API Segment's own SDKs use, with the write key in the body because a
// beacon cannot send an Authorization header.
//
//   gotrack('init', {endpoint, writeKey, persist, spa});
//   gotrack('pageview');
//   gotrack('track', 'signup', {plan: 'pro'});
//   gotrack('identify', 'user-42', {traits});
//
// Calls made before the script loads are queued by the snippet in
// window.gotrack.q and replayed here, in order.

const VERSION = '1';
const QUEUE_KEY = 'gotrack_q'; // the retry queue in localStorage
const VISITOR_KEY = 'gotrack_vid'; // only with init({persist: true})
const MAX_QUEUED = 100;
const MAX_AGE = 24 * 3600 * 1000;
const BATCH_DELAY = 1000;
const RETRY_DELAY = 5000;
const MAX_BATCH = 50;

const w = window;
const nav = navigator;
const doc = document;

let cfg = null;
let pending = []; // messages waiting for the batch timer
let timer = 0;
let userId = null;
let visitorId = null;
let lastPage = null; // href of the last pageview, against double counting

// The script's own origin and prefix are the default endpoint, so that
// ROUTE_PREFIX needs no setting in the page.
const script = doc.currentScript;
const defaultEndpoint = script && script.src ? script.src.replace(/\/gotrack\.js(\?.*)?$/, '') : '';

function optedOut() {
  return nav.doNotTrack === '1' || w.doNotTrack === '1' || nav.globalPrivacyControl === true;
}

// uuid returns a random UUIDv4. getRandomValues works outside secure
// contexts too, unlike crypto.randomUUID.
function uuid() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 15) | 64;
  b[8] = (b[8] & 63) | 128;
  let s = '';
  for (let i = 0; i < 16; i++) {
    s += (b[i] + 256).toString(16).slice(1) + (i === 3 || i === 5 || i === 7 || i === 9 ? '-' : '');
  }
  return s;
}

function storage(key, value) {
  try {
    if (value === undefined) return w.localStorage.getItem(key);
    if (value === null) w.localStorage.removeItem(key);
    else w.localStorage.setItem(key, value);
  } catch (e) {
    // localStorage may be disabled or full: then there is no retry queue.
  }
  return null;
}

function message(type, fields) {
  const m = {
    type,
    messageId: uuid(), // made here, so that a retry can never duplicate the event
    anonymousId: visitorId,
    timestamp: new Date().toISOString(),
    context: {
      page: { url: location.href, referrer: doc.referrer, title: doc.title },
      library: { name: 'gotrack.js', version: VERSION },
    },
  };
  if (userId) m.userId = userId;
  return Object.assign(m, fields);
}

function enqueue(m) {
  pending.push(m);
  if (pending.length >= MAX_BATCH) flush(false);
  else if (!timer) timer = setTimeout(() => flush(false), BATCH_DELAY);
}

// readQueue returns the retry queue without what is too old.
function readQueue() {
  let q = [];
  try {
    q = JSON.parse(storage(QUEUE_KEY) || '[]');
  } catch (e) {}
  const now = Date.now();
  return q.filter((m) => now - Date.parse(m.timestamp) < MAX_AGE);
}

function saveQueue(q) {
  storage(QUEUE_KEY, q.length ? JSON.stringify(q.slice(-MAX_QUEUED)) : null);
}

function keep(msgs) {
  saveQueue(readQueue().concat(msgs));
}

// flush sends what is pending, and what waits in the retry queue. hiding
// says the page is going away: only a beacon or a keepalive request
// outlives it.
function flush(hiding) {
  clearTimeout(timer);
  timer = 0;
  const msgs = readQueue().concat(pending);
  pending = [];
  if (!msgs.length) return;
  saveQueue([]);
  if (nav.onLine === false) {
    keep(msgs); // sent when the browser is back online
    return;
  }
  for (let i = 0; i < msgs.length; i += MAX_BATCH) send(msgs.slice(i, i + MAX_BATCH), hiding);
}

// send posts one batch. While the page lives, fetch shows the response:
// a network error, a 5xx or a 429 puts the batch back in the retry queue,
// retried a little later (and on 'online'). sendBeacon, whose true only
// means "queued", is for a page going away, where no response can be read.
function send(msgs, hiding) {
  const url = cfg.endpoint + '/v1/batch';
  const body = JSON.stringify({ writeKey: cfg.writeKey, sentAt: new Date().toISOString(), batch: msgs });
  if (hiding && nav.sendBeacon && nav.sendBeacon(url, new Blob([body], { type: 'text/plain' }))) return;
  if (w.fetch) {
    const retry = () => {
      keep(msgs);
      if (!timer) timer = setTimeout(() => flush(false), RETRY_DELAY);
    };
    // text/plain keeps it a simple request: no preflight.
    fetch(url, { method: 'POST', body, keepalive: true, headers: { 'Content-Type': 'text/plain' } })
      .then((r) => {
        if (r.status >= 500 || r.status === 429) retry();
      })
      .catch(retry);
    return;
  }
  if (!hiding) msgs.forEach(pixel);
}

// pixel is the last resort: one GET per event, with what the pixel takes.
function pixel(m) {
  const p = m.context.page;
  const q = { e: m.type === 'page' ? 'pageview' : m.event || m.type, eid: m.messageId, uid: m.anonymousId, url: p.url, ref: p.referrer, title: p.title };
  for (const k in m.properties || {}) q['p.' + k] = String(m.properties[k]);
  new Image().src = cfg.endpoint + '/px.gif?' + new URLSearchParams(q);
}

function pageview(props) {
  if (location.href === lastPage) return;
  const referrer = lastPage || doc.referrer;
  lastPage = location.href;
  const m = message('page', { properties: Object.assign({ url: lastPage, referrer, title: doc.title, path: location.pathname }, props) });
  m.context.page.referrer = referrer;
  enqueue(m);
}

const commands = {
  init(opts) {
    if (cfg) return; // once: a second init would patch history twice
    cfg = Object.assign({ endpoint: defaultEndpoint, spa: true }, opts);
    cfg.endpoint = cfg.endpoint.replace(/\/$/, '');
    if (cfg.persist) {
      visitorId = storage(VISITOR_KEY) || uuid();
      storage(VISITOR_KEY, visitorId);
    } else {
      visitorId = uuid(); // for this page load only
      storage(VISITOR_KEY, null);
    }
    if (cfg.spa) {
      for (const name of ['pushState', 'replaceState']) {
        const orig = history[name];
        history[name] = function () {
          const r = orig.apply(this, arguments);
          pageview();
          return r;
        };
      }
      w.addEventListener('popstate', () => pageview());
    }
    w.addEventListener('pagehide', () => flush(true));
    doc.addEventListener('visibilitychange', () => {
      if (doc.visibilityState === 'hidden') flush(true);
    });
    w.addEventListener('online', () => flush(false));
    if (readQueue().length) setTimeout(() => flush(false), BATCH_DELAY); // left by an earlier page
  },
  pageview,
  track(name, props) {
    enqueue(message('track', { event: name, properties: props || {} }));
  },
  identify(id, traits) {
    userId = String(id);
    enqueue(message('identify', { userId, traits: traits || {} }));
  },
};

function gotrack(cmd, ...args) {
  if (optedOut()) return; // DNT or GPC: nothing is sent and nothing is stored
  if (cmd !== 'init' && !cfg) return;
  if (commands[cmd]) commands[cmd](...args);
}

// A page that includes the script twice keeps the first copy, and its state.
if (!(w.gotrack && w.gotrack.loaded)) {
  const queued = (w.gotrack && w.gotrack.q) || [];
  gotrack.loaded = true;
  w.gotrack = gotrack;
  for (const args of queued) gotrack(...args);
}
