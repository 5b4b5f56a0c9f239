// A domain's protocol stub for its messaging node's own dialect: reTHINK JSON
// messages, one per WebSocket text frame, after an `open` to mn:/session.
//
// It runs in another domain's runtime, so it opens a guest session under a
// runtime URL of the node's domain and speaks for that runtime's hyperties from
// addresses below it (the node grants a session its runtime URL and everything
// under it), translating both ways. Its descriptor's configuration gives the
// endpoint (`url`, the only one it can open) and the node's `domain`.
var domain = stub.configuration.domain;
var guest = "hyperty-runtime://" + domain + "/guest-" + Math.floor(Math.random() * 1e12).toString(36);
var socket = null, live = false, openId = 1;
var alias = {}, original = {}, aliases = 0;

function hostOf(addr) {
  var i = addr.indexOf("://");
  if (i < 0) return "";
  var rest = addr.slice(i + 3), j = rest.indexOf("/");
  return j < 0 ? rest : rest.slice(0, j);
}

// a runtime address as seen from the node, and back
function outside(addr) {
  if (hostOf(addr) === domain) return addr;
  if (!(addr in alias)) {
    aliases += 1;
    alias[addr] = guest + "/a/" + aliases;
    original[alias[addr]] = addr;
  }
  return alias[addr];
}
function inside(addr) { return original[addr] || addr; }
function each(to, f) { return Array.isArray(to) ? to.map(f) : f(to); }

stub.onconnect(function () {
  stub.report("in-progress");
  socket = stub.connect();
  socket.onopen = function () {
    socket.send(JSON.stringify({ id: openId, type: "open", from: guest, to: "mn:/session", body: {} }));
  };
  socket.onmessage = function (e) {
    var m = JSON.parse(e.data);
    if (!live && m.type === "response" && m.id === openId && m.to === guest) {
      if (m.body && m.body.code === 200) { live = true; stub.report("live"); }
      else { stub.report("failed", "open refused: " + JSON.stringify(m.body)); }
      return;
    }
    m.to = each(m.to, inside);
    bus.post(m);
  };
  socket.onclose = function (e) {
    live = false;
    stub.report("disconnected", e.reason);
  };
});

stub.ondisconnect(function () { if (socket) socket.close(); });

bus.listen(function (m) {
  if (!live) {
    if (m.type !== "response") bus.reply(m, 504, "the stub is not connected");
    return;
  }
  m.from = outside(m.from);
  socket.send(JSON.stringify(m));
});
