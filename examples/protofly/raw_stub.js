// A domain's protocol stub for its messaging node's own dialect: reTHINK JSON
// messages, one per WebSocket text frame, after an `open` to mn:/session.
//
// It runs in another domain's runtime, so it opens a guest session under a
// runtime URL of the node's domain and speaks for that runtime's hyperties from
// addresses below it (the node grants a session its runtime URL and everything
// under it), translating both ways. Its descriptor's configuration gives the
// endpoint (`url`, the only one it can open) and the node's `domain`; optional:
// `reconnectInitialMs` (50), `reconnectMaxMs` (5000), `queueLimit` (4096),
// `handshakeTimeoutMs` (5000).
//
// Like the built-in bridge it survives a lost connection: it reconnects with
// exponential backoff (with jitter) and sends `re-open` with the session's
// runtime token, so the node keeps its addresses and subscriptions; if the node
// no longer knows the session (it restarted) it opens afresh under the same
// guest URL (the same addresses) and subscribes again to what it had
// subscribed to. Meanwhile up to `queueLimit` messages wait; beyond, requests
// are answered 504 "messaging node unreachable". A stub that never reaches its
// endpoint reports `failed` with the reason, which names the endpoint.
var cfg = stub.configuration;
var domain = cfg.domain;
var initialDelay = cfg.reconnectInitialMs || 50;
var maxDelay = cfg.reconnectMaxMs || 5000;
var queueLimit = cfg.queueLimit || 4096;
var handshakeTimeout = cfg.handshakeTimeoutMs || 5000;
var sm = "domain://msg-node." + domain + "/sm";
var guest = "hyperty-runtime://" + domain + "/guest-" + Math.floor(Math.random() * 1e12).toString(36);

// idle | connecting | handshaking | live | failed | stopped
var state = "idle", socket = null, generation = 0, attempts = 0, everLive = false;
var token = null, controlId = 0, control = {}, closing = null;
var queue = [], subscriptions = {};
var alias = {}, original = {}, aliases = 0;

function hostOf(addr) {
  var i = addr.indexOf("://");
  if (i < 0) return "";
  var rest = addr.slice(i + 3), j = rest.indexOf("/");
  return j < 0 ? rest : rest.slice(0, j);
}

// a runtime address as seen from the node, and back
function outside(addr) {
  if (typeof addr !== "string" || hostOf(addr) === domain) return addr;
  if (!(addr in alias)) {
    aliases += 1;
    alias[addr] = guest + "/a/" + aliases;
    original[alias[addr]] = addr;
  }
  return alias[addr];
}
function inside(addr) { return original[addr] || addr; }
function each(to, f) { return Array.isArray(to) ? to.map(f) : f(to); }

function sendControl(kind, type, body) {
  controlId += 1;
  // ids of the stub's own requests never meet the runtime's: their answers go
  // to the guest URL itself, which no hyperty is aliased to
  control[controlId] = kind;
  socket.send(JSON.stringify({ id: controlId, type: type, from: guest, to: "mn:/session", body: body }));
}

function handshake() {
  state = "handshaking";
  if (token) sendControl("re-open", "re-open", { runtimeToken: token });
  else sendControl("open", "open", {});
  var g = generation;
  setTimeout(function () {
    if (g !== generation || state !== "handshaking") return;
    closing = "no answer to the session request within " + handshakeTimeout + " ms";
    socket.close();
  }, handshakeTimeout);
}

// what a fresh session lost: the subscriptions made through the old one
function subscribeAgain() {
  for (var k in subscriptions) {
    controlId += 1;
    control[controlId] = "subscribe";
    var m = JSON.parse(subscriptions[k]);
    m.id = controlId;
    m.from = guest;
    socket.send(JSON.stringify(m));
  }
}

function goLive() {
  state = "live";
  attempts = 0;
  everLive = true;
  stub.report("live");
  while (queue.length > 0 && state === "live") forward(queue.shift());
}

function onControl(kind, m) {
  var ok = m.body && m.body.code === 200;
  if (kind === "open" && ok) {
    token = m.body.runtimeToken || null;
    subscribeAgain();
    goLive();
  } else if (kind === "open") {
    var why = "open refused: " + JSON.stringify(m.body);
    if (everLive) { socket.close(); return; }
    state = "failed";
    stub.report("failed", why);
    socket.close();
  } else if (kind === "re-open" && ok) {
    goLive();
  } else if (kind === "re-open") {
    // the node no longer knows the session: start afresh, same guest URL
    token = null;
    handshake();
  } else if (!ok) {
    console.log("subscribing again at " + cfg.url + " failed: " + JSON.stringify(m.body));
  }
}

// answers every request waiting in the queue with `code` and `why`
function refuseQueued(code, why) {
  var q = queue;
  queue = [];
  for (var i = 0; i < q.length; i++) {
    if (q[i].type !== "response") bus.refuse(q[i], code, why);
  }
}

function connect() {
  generation += 1;
  state = "connecting";
  stub.report("in-progress");
  socket = stub.connect();
  socket.onopen = handshake;
  socket.onmessage = function (e) {
    var m = JSON.parse(e.data);
    if (m.type === "response" && m.to === guest && control[m.id]) {
      var kind = control[m.id];
      delete control[m.id];
      onControl(kind, m);
      return;
    }
    m.to = each(m.to, inside);
    bus.post(m);
  };
  socket.onclose = function (e) {
    var why = closing || e.reason;
    if (why.indexOf(cfg.url) < 0) why = cfg.url + ": " + why;
    socket = null;
    control = {};
    closing = null;
    if (state === "stopped") return;
    if (!everLive) {
      // never reached the endpoint: nothing to keep, nothing to retry
      if (state !== "failed") stub.report("failed", why);
      state = "failed";
      refuseQueued(504, "stub for " + domain + ": " + why);
      return;
    }
    state = "idle";
    stub.report("disconnected", why);
    var delay = Math.min(maxDelay, initialDelay * Math.pow(2, Math.min(attempts, 16)));
    attempts += 1;
    setTimeout(function () { if (state === "idle") connect(); }, delay * (0.8 + 0.4 * Math.random()));
  };
}

stub.onconnect(connect);

stub.ondisconnect(function () {
  var wasLive = state === "live";
  state = "stopped";
  if (socket) {
    if (wasLive) socket.send(JSON.stringify({ id: controlId + 1, type: "close", from: guest, to: "mn:/session", body: {} }));
    socket.close();
  }
  refuseQueued(504, "the stub for " + domain + " was closed");
});

// subscriptions this session holds at the node's /sm, to make again after a fresh open
function remember(m) {
  if (m.to !== sm || (m.type !== "subscribe" && m.type !== "unsubscribe")) return;
  var body = m.body || {};
  var key = JSON.stringify([m.from, body.resources || body.subscribe || body.unsubscribe || [], body.source || null]);
  if (m.type === "subscribe") subscriptions[key] = JSON.stringify(m);
  else delete subscriptions[key];
}

function forward(m) {
  m.from = outside(m.from);
  if (m.body && typeof m.body.source === "string") m.body.source = outside(m.body.source);
  remember(m);
  socket.send(JSON.stringify(m));
}

bus.listen(function (m) {
  if (state === "live") { forward(m); return; }
  if (state === "failed" || state === "stopped") {
    if (m.type !== "response") bus.refuse(m, 504, "stub for " + domain + ": not connected to " + cfg.url);
    return;
  }
  if (queue.length < queueLimit) { queue.push(m); return; }
  if (m.type !== "response") bus.refuse(m, 504, "messaging node unreachable");
});
