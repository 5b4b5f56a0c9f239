// The only powers catalogue code gets. Installed before the code runs; the
// native functions it wraps are removed from the global object afterwards.
(function (g, native, kind, self, config) {
  "use strict";
  var listeners = [], timers = {}, socket = null, onconnect = null, ondisconnect = null;
  function post(m) {
    if (typeof m !== "object" || m === null) throw new TypeError("bus.post takes a message object");
    native.post(JSON.stringify(m));
  }
  g.bus = Object.freeze({
    // f(message) for every message delivered to this code
    listen: function (f) {
      if (typeof f !== "function") throw new TypeError("bus.listen takes a function");
      listeners.push(f);
    },
    post: post,
    // answers a request: {id, type:"response", from: its to, to: its from, body:{code, value}}
    reply: function (m, code, value) {
      var body = { code: code };
      if (value !== undefined) body.value = value;
      post({ id: m.id, type: "response", from: m.to, to: m.from, body: body });
    },
    // refuses a request: the same, with {code, description}
    refuse: function (m, code, description) {
      post({ id: m.id, type: "response", from: m.to, to: m.from,
        body: { code: code, description: String(description) } });
    }
  });
  g.setTimeout = function (f, ms) {
    if (typeof f !== "function") throw new TypeError("setTimeout takes a function");
    var id = native.setTimer(Math.max(0, Number(ms) || 0));
    timers[id] = f;
    return id;
  };
  g.clearTimeout = function (id) {
    delete timers[id];
    native.clearTimer(Number(id) || 0);
  };
  g.console = Object.freeze({
    log: function () { native.log(Array.prototype.map.call(arguments, String).join(" ")); }
  });
  var me = { url: self, configuration: config };
  if (kind === "protocolstub") {
    // the one endpoint the descriptor declares (configuration.url)
    me.connect = function () {
      native.wsOpen();
      socket = { onopen: null, onmessage: null, onclose: null,
        send: function (text) { native.wsSend(String(text)); },
        close: function () { native.wsClose(); } };
      return socket;
    };
    me.report = function (status, desc) { native.status(String(status), desc === undefined ? "" : String(desc)); };
    me.onconnect = function (f) { onconnect = f; };
    me.ondisconnect = function (f) { ondisconnect = f; };
    g.stub = Object.freeze(me);
  } else {
    g.hyperty = Object.freeze(me);
  }
  Object.defineProperty(g, "__dispatch", { writable: false, configurable: false, value: function (what, data) {
    var i;
    switch (what) {
      case "message":
        var m = JSON.parse(data);
        for (i = 0; i < listeners.length; i++) listeners[i](m);
        break;
      case "timer":
        var f = timers[data];
        delete timers[data];
        if (f) f();
        break;
      case "ws-open": if (socket && socket.onopen) socket.onopen(); break;
      case "ws-message": if (socket && socket.onmessage) socket.onmessage({ data: data }); break;
      case "ws-close": if (socket && socket.onclose) socket.onclose({ reason: data }); socket = null; break;
      case "connect": if (onconnect) onconnect(); else if (kind === "protocolstub") me.report("live"); break;
      case "disconnect": if (ondisconnect) ondisconnect(); break;
    }
  } });
})
