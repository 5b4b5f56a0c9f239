// mysite.com's protocol stub for seed 003's in-the-wire protocol ("rtcquery"):
// JSON {"request": {...}} / {"response": {...}} objects over one WebSocket, with
// call-id, transaction-id, request-type, source-user, destination-user,
// subject, cookie and media (ROAP) fields.
//
// A reTHINK request to hyperty://<domain>/<User> becomes a "call" request to
// <User> (value: {subject, media, requestType, callId}); its response comes back
// as a reTHINK response (accepted 200, rejected 403, not-online 404) with
// {status, callId, media}, and an accepted call is acknowledged ("ack"). Later
// requests of the call from the far side reach the caller as reTHINK messages:
// "hangup" as delete, anything else as update.
//
// configuration: {url (the one endpoint), domain, user, cookie}.
var cfg = stub.configuration;
var socket = null, live = false, next = 1000;
var calls = {};    // transaction-id -> the reTHINK request waiting for its response
var callers = {};  // call-id -> the caller's address
var codes = { accepted: 200, rejected: 403, "not-online": 404 };

function userOf(addr) { var p = String(addr).split("/"); return p[p.length - 1]; }
function addressOf(user) { return "hyperty://" + cfg.domain + "/" + user; }
function send(kind, fields) {
  fields.cookie = cfg.cookie;
  fields["source-user"] = cfg.user;
  var frame = {};
  frame[kind] = fields;
  socket.send(JSON.stringify(frame));
}

stub.onconnect(function () {
  stub.report("in-progress");
  socket = stub.connect();
  socket.onopen = function () { live = true; stub.report("live"); };
  socket.onmessage = function (e) {
    var f = JSON.parse(e.data);
    if (f.response) {
      var r = f.response, m = calls[r["transaction-id"]];
      if (!m) return;
      delete calls[r["transaction-id"]];
      var code = codes[r.status] || 500;
      bus.post({ id: m.id, type: "response", from: m.to, to: m.from,
                 body: { code: code, value: { status: r.status, callId: r["call-id"], media: r.media } } });
      if (code === 200) {
        send("request", { "call-id": r["call-id"], "transaction-id": r["transaction-id"],
                          "request-type": "ack", "destination-user": r["source-user"], media: { type: "OK" } });
      } else {
        delete callers[r["call-id"]];
      }
    } else if (f.request) {
      var q = f.request, caller = callers[q["call-id"]];
      if (!caller) return;
      var hangup = q["request-type"] === "hangup";
      if (hangup) delete callers[q["call-id"]];
      bus.post({ id: q["transaction-id"], type: hangup ? "delete" : "update",
                 from: addressOf(q["source-user"]), to: caller,
                 body: { value: { callId: q["call-id"], requestType: q["request-type"] } } });
    }
  };
  socket.onclose = function (e) { live = false; stub.report("disconnected", e.reason); };
});

stub.ondisconnect(function () { if (socket) socket.close(); });

bus.listen(function (m) {
  if (m.type === "response") return;
  if (!live) { bus.refuse(m, 504, "not connected to " + cfg.domain); return; }
  var v = (m.body && m.body.value) || {};
  var t = next++;
  var callId = v.callId || ("c" + t.toString(36));
  calls[t] = m;
  callers[callId] = m.from;
  send("request", { "call-id": callId, "transaction-id": t, "request-type": v.requestType || "call",
                    "destination-user": userOf(Array.isArray(m.to) ? m.to[0] : m.to),
                    subject: v.subject === undefined ? null : v.subject, media: v.media });
});
