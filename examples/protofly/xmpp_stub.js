// An XMPP domain's protocol stub: XMPP over WebSocket (RFC 7395, subprotocol
// "xmpp"), straight to the domain's XMPP server, no gateway.
//
// It logs in as configuration.user (SASL PLAIN over the declared endpoint),
// binds a resource and sends presence. A reTHINK request to
// hyperty://<domain>/<user> with value {text} becomes a chat <message> to
// <user>@<domain> and is answered 200 once sent; a chat message from a JID the
// runtime wrote to reaches the hyperty that wrote last as an `update` from
// hyperty://<domain>/<user> with value {text, jid}.
//
// configuration: {url, domain, user, password, resource, protocols: ["xmpp"]}.
var cfg = stub.configuration;
var socket = null, state = "closed", jid = null;
var peers = {};  // bare JID -> the runtime address that wrote to it last

function b64(s) {
  var t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", o = "", i;
  for (i = 0; i < s.length; i += 3) {
    var n = (s.charCodeAt(i) << 16) | ((s.charCodeAt(i + 1) || 0) << 8) | (s.charCodeAt(i + 2) || 0);
    o += t[(n >> 18) & 63] + t[(n >> 12) & 63] +
      (i + 1 < s.length ? t[(n >> 6) & 63] : "=") + (i + 2 < s.length ? t[n & 63] : "=");
  }
  return o;
}
function esc(s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;").replace(/'/g, "&apos;");
}
function unesc(s) {
  return s.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'").replace(/&amp;/g, "&");
}
function attr(x, name) {
  var m = new RegExp("\\s" + name + "=(['\"])([^'\"]*)\\1").exec(x);
  return m ? unesc(m[2]) : null;
}
function child(x, name) {
  var m = new RegExp("<" + name + "(\\s[^>]*)?>([\\s\\S]*?)</" + name + ">").exec(x);
  return m ? m[2] : null;
}
function open() {
  socket.send('<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="' + esc(cfg.domain) + '" version="1.0"/>');
}
function userOf(addr) { var p = String(addr).split("/"); return p[p.length - 1]; }

stub.onconnect(function () {
  stub.report("in-progress");
  socket = stub.connect();
  socket.onopen = function () { state = "sasl"; open(); };
  socket.onmessage = function (e) {
    var x = e.data;
    if (x.indexOf("<open") === 0) return;
    if (x.indexOf("<close") === 0) { stub.report("disconnected", "stream closed by the server"); return; }
    if (state === "sasl" && x.indexOf("features") > 0 && x.indexOf("PLAIN") > 0) {
      state = "authenticating";
      socket.send('<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">' +
        b64("\u0000" + cfg.user + "\u0000" + cfg.password) + "</auth>");
    } else if (state === "authenticating") {
      if (x.indexOf("<success") === 0) { state = "bind"; open(); }
      else { state = "failed"; stub.report("failed", "login refused: " + x.slice(0, 200)); }
    } else if (state === "bind" && x.indexOf("features") > 0 && x.indexOf("bind") > 0) {
      state = "binding";
      socket.send('<iq type="set" id="bind1" xmlns="jabber:client"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"><resource>' +
        esc(cfg.resource || "hyperty") + "</resource></bind></iq>");
    } else if (state === "binding" && x.indexOf("<iq") === 0 && attr(x, "id") === "bind1") {
      if (attr(x, "type") !== "result") { state = "failed"; stub.report("failed", "bind refused"); return; }
      jid = unesc(child(x, "jid") || "");
      socket.send('<presence xmlns="jabber:client"/>');
      state = "live";
      stub.report("live", jid);
    } else if (state === "live" && x.indexOf("<message") === 0) {
      var body = child(x, "body"), from = attr(x, "from") || "";
      var bare = from.split("/")[0], to = peers[bare];
      if (body === null || !to) return;
      bus.post({ id: Math.floor(Math.random() * 1e9), type: "update",
                 from: "hyperty://" + cfg.domain + "/" + bare.split("@")[0], to: to,
                 body: { value: { text: unesc(body), jid: from } } });
    }
  };
  socket.onclose = function (e) { state = "closed"; stub.report("disconnected", e.reason); };
});

stub.ondisconnect(function () { if (socket) { socket.send('<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>'); socket.close(); } });

bus.listen(function (m) {
  if (m.type === "response") return;
  if (state !== "live") { bus.refuse(m, 504, "not logged in at " + cfg.domain); return; }
  var v = (m.body && m.body.value) || {};
  var to = userOf(Array.isArray(m.to) ? m.to[0] : m.to) + "@" + cfg.domain;
  peers[to] = m.from;
  socket.send('<message xmlns="jabber:client" type="chat" to="' + esc(to) + '" id="r' + m.id + '"><body>' +
    esc(v.text === undefined ? "" : v.text) + "</body></message>");
  bus.reply(m, 200, { jid: to, sent: true });
});
