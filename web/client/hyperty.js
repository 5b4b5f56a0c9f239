// hyperty.js — a reTHINK runtime for browsers and Node.js, talking to a hyperty
// messaging node over its raw WebSocket dialect (one JSON message per text frame).
//
//   import { connect } from "http://HOST:PORT/client/hyperty.js";
//   const rt = await connect({ url: "ws://HOST:PORT/ws", token: idToken });
//   const me = await rt.allocate();
//   rt.listen(me, (msg) => rt.reply(msg, 200, { text: "hi" }));
//   const res = await rt.post({ type: "read", from: me, to: other }, { timeout: 5000 });
//
// No dependencies, no build step. What the node must know of this runtime:
//
// * Session: `open` to `mn:/session` with `body.idToken`; the `runtimeToken` of the
//   answer resumes the session after a reconnect (`re-open`). The node pings at the
//   WebSocket level (answered by every WebSocket implementation); the client also
//   sends a reTHINK `ping` to `mn:/session` every `heartbeatMs` and reconnects when
//   it stays unanswered, so a half-open connection is noticed.
// * Reconnect: jittered exponential backoff, then `re-open` (the node flushes what
//   it buffered meanwhile). When the node no longer knows the session, a fresh
//   `open` follows and everything the runtime held is claimed again: allocated
//   addresses (`value.reclaim`), `/sm` subscriptions, object audiences.
// * Syncher: this runtime plays its own SyncherManager at `<runtime>/sm` (an
//   address under its runtime URL, so the node lets it send from there), speaking
//   exactly what the Rust SyncherManager speaks to a remote manager: observers
//   subscribe at `<obj>/subscription` with `body.subscriber`, read gaps from `<obj>`
//   with `body.version`, write children to `<obj>`; reporters publish from `<obj>`
//   to `<obj>/changes` and `<obj>/children/`, answer subscriptions with the
//   snapshot, answer reads from a bounded history, and name their observers'
//   managers as the object's audience. `syncher.onInvitation` acknowledges the
//   invitations to observe that reach a hyperty. What it does not do: persist
//   anything, or check JSON Schemas.
// * Registry: `rt.registry` speaks to the domain registry (`domain://registry.<D>`)
//   from `<runtime>/registry`: register hyperties and data objects (the node lets
//   a session register only its own addresses, under its own identity), look
//   them up, keep them alive, unregister them.

/** @typedef {{id?: number|string, type: string, from: string, to: string, body?: Record<string, any>}} Message */
/** @typedef {(msg: Message) => void} Handler */

/** Most requests waiting for an answer. */
export const MAX_PENDING = 10000;
/** Most frames queued while the socket is down. */
export const MAX_OFFLINE = 1000;
/** Most changes a reporter keeps for observers that missed some. */
export const HISTORY = 256;
/** Most early changes an observer holds while it fetches a gap. */
export const REORDER_BUFFER = 1024;
/** Most events an iterator of an object holds before it reports a resync. */
export const ITERATOR_BUFFER = 1024;

/** A refused or failed request: a reTHINK response code and its description. */
export class HypertyError extends Error {
  /**
   * @param {number} code
   * @param {string} description
   * @param {Message} [response]
   */
  constructor(code, description, response) {
    super(`${code}: ${description}`);
    this.name = "HypertyError";
    this.code = code;
    this.description = description;
    this.response = response;
  }
}

/** @param {Message} m */
const codeOf = (m) => {
  const c = m.body && m.body.code;
  return typeof c === "number" ? c : Number(c) || 500;
};
/** @param {Message} m */
const descOf = (m) => {
  const b = m.body || {};
  const d = b.description ?? b.desc;
  return typeof d === "string" ? d : d === undefined ? "refused" : JSON.stringify(d);
};
const domainOf = (url) => {
  const m = /^[a-z][a-z0-9+.-]*:\/\/([^/]+)/i.exec(url);
  return m ? m[1] : "";
};
const uuid = () =>
  globalThis.crypto && globalThis.crypto.randomUUID
    ? globalThis.crypto.randomUUID()
    : `${Date.now().toString(16)}-${Math.random().toString(16).slice(2)}`;

/** A tiny event emitter. */
class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._on = new Map();
  }
  /**
   * Calls `fn` for every `event`; returns a function that stops it.
   * @param {string} event
   * @param {Function} fn
   */
  on(event, fn) {
    if (!this._on.has(event)) this._on.set(event, new Set());
    this._on.get(event).add(fn);
    return () => this._on.get(event)?.delete(fn);
  }
  _emit(event, ...args) {
    for (const fn of [...(this._on.get(event) || [])]) {
      try {
        fn(...args);
      } catch (e) {
        if (event !== "error") this._emit("error", e);
      }
    }
  }
}

/**
 * Connects to a node and opens a session.
 * @param {object} options
 * @param {string} options.url `ws://HOST:PORT/ws`
 * @param {string | (() => string | Promise<string>)} [options.token] an ID token (or a function giving a fresh one)
 * @param {string} [options.runtimeUrl] this runtime's URL (default `runtime://<domain>/<uuid>`)
 * @param {string} [options.domain] the node's domain (default: the runtime URL's, else the node's `/health`)
 * @param {number} [options.timeout] request timeout, ms (15000)
 * @param {number} [options.heartbeatMs] reTHINK ping interval, ms (20000; 0: none)
 * @param {{min?: number, max?: number}} [options.backoff] reconnect delays, ms (200 … 10000)
 * @param {typeof WebSocket} [options.WebSocket] a WebSocket class (default: the global one)
 * @returns {Promise<Runtime>}
 */
export async function connect(options) {
  const rt = new Runtime(options);
  await rt.open();
  return rt;
}

/** One runtime's session with a node. */
export class Runtime extends Emitter {
  /** @param {Parameters<typeof connect>[0]} options */
  constructor(options) {
    super();
    if (!options || !options.url) throw new TypeError("connect needs options.url (ws://HOST:PORT/ws)");
    this.url = options.url;
    this.options = options;
    this.timeout = options.timeout ?? 15000;
    this.heartbeatMs = options.heartbeatMs ?? 20000;
    this.backoff = { min: 200, max: 10000, ...(options.backoff || {}) };
    this.WS = options.WebSocket || globalThis.WebSocket;
    if (!this.WS) throw new TypeError("no WebSocket: pass options.WebSocket");
    this.domain = options.domain || (options.runtimeUrl ? domainOf(options.runtimeUrl) : "");
    this.runtimeUrl = options.runtimeUrl || "";
    /** @type {string | null} */
    this.runtimeToken = null;
    /** @type {"idle"|"connecting"|"live"|"reconnecting"|"closed"} */
    this.status = "idle";
    this._nextId = 1;
    /** @type {Map<string, {resolve: Function, reject: Function, timer: any, progress?: Function}>} */
    this._pending = new Map();
    /** @type {Map<string, Set<Handler>>} */
    this._listeners = new Map();
    /** @type {string[]} */
    this._offline = [];
    /** @type {Set<string>} */
    this.allocated = new Set();
    /** @type {Map<string, string>} resource → source, of `/sm` subscriptions */
    this._subscribed = new Map();
    /** @type {Set<any>} */
    this._timers = new Set();
    this._attempt = 0;
    this._ws = null;
    this.syncher = new Syncher(this);
    this.registry = new Registry(this);
  }

  get smUrl() {
    return `domain://msg-node.${this.domain}/sm`;
  }
  get allocationUrl() {
    return `domain://msg-node.${this.domain}/address-allocation`;
  }

  async _token() {
    const t = this.options.token;
    return typeof t === "function" ? await t() : t;
  }

  _later(ms, fn) {
    const t = setTimeout(() => {
      this._timers.delete(t);
      fn();
    }, ms);
    this._timers.add(t);
    return t;
  }

  /** Opens the socket and the session (called by `connect`). */
  async open() {
    if (!this.domain) {
      const http = this.url.replace(/^ws/, "http").replace(/\/ws$/, "");
      const health = await (await fetch(`${http}/health`)).json();
      this.domain = health.domain;
    }
    if (!this.runtimeUrl) this.runtimeUrl = `runtime://${this.domain}/${uuid()}`;
    this.status = "connecting";
    await this._socket();
    await this._session(false);
    this._live();
  }

  /** Opens a WebSocket; resolves once it is open. */
  _socket() {
    return new Promise((resolve, reject) => {
      const ws = new this.WS(this.url);
      this._ws = ws;
      let opened = false;
      ws.onopen = () => {
        opened = true;
        resolve();
      };
      ws.onmessage = (ev) => this._frame(typeof ev.data === "string" ? ev.data : String(ev.data));
      ws.onerror = () => {
        if (!opened) reject(new HypertyError(503, `cannot connect to ${this.url}`));
      };
      ws.onclose = (ev) => {
        if (!opened) reject(new HypertyError(503, `cannot connect to ${this.url}`));
        if (this._ws === ws) this._dropped(ev.code, ev.reason);
      };
    });
  }

  /**
   * `open` (or `re-open` with the runtime token); a refusal rejects.
   * @param {boolean} resume
   */
  async _session(resume) {
    const body = {};
    const token = await this._token();
    if (token) body.idToken = token;
    if (resume) body.runtimeToken = this.runtimeToken;
    const msg = { type: resume ? "re-open" : "open", from: this.runtimeUrl, to: "mn:/session", body };
    const res = await this.post(msg, { direct: true });
    this.runtimeToken = res.body.runtimeToken ?? this.runtimeToken;
    return res;
  }

  _live() {
    this.status = "live";
    this._attempt = 0;
    const queued = this._offline.splice(0);
    for (const f of queued) this._write(f);
    this._beat();
    this._emit("status", "live");
  }

  _beat() {
    if (!this.heartbeatMs) return;
    const ws = this._ws;
    this._later(this.heartbeatMs, () => {
      if (this._ws !== ws || this.status !== "live") return;
      this.post({ type: "ping", from: this.runtimeUrl, to: "mn:/session" }, { timeout: this.timeout, direct: true })
        .then(() => this._beat())
        .catch(() => {
          if (this._ws === ws && this.status === "live") ws.close(4000, "heartbeat unanswered");
        });
    });
  }

  /** The socket went away: reconnect unless it was closed on purpose or refused. */
  _dropped(code, reason) {
    this._ws = null;
    if (this.status === "closed") return;
    if (this._fatal) {
      this.status = "closed";
      this._failAll(this._fatal);
      this._emit("status", "closed");
      return;
    }
    if (this.status === "connecting") return;
    this.status = "reconnecting";
    this._emit("status", "disconnected", { code, reason });
    this._reconnect();
  }

  _reconnect() {
    const { min, max } = this.backoff;
    const base = Math.min(max, min * 2 ** Math.min(this._attempt, 16));
    const delay = base / 2 + Math.random() * (base / 2);
    this._attempt += 1;
    this._later(delay, async () => {
      if (this.status === "closed") return;
      try {
        await this._socket();
      } catch {
        return this._reconnect();
      }
      const ws = this._ws;
      try {
        await this._resume();
        this._live();
        this._emit("status", "reconnected");
      } catch (e) {
        if (e instanceof HypertyError && e.code === 401) {
          this._fatal = e;
          this._emit("error", e);
        }
        if (ws && ws.readyState <= 1) ws.close();
      }
    });
  }

  /** `re-open`; when the node no longer knows the session, a fresh `open` and re-claims. */
  async _resume() {
    try {
      await this._session(true);
      return;
    } catch (e) {
      if (e instanceof HypertyError && e.code === 401) throw e;
    }
    await this._session(false);
    if (this.allocated.size) {
      await this.post(
        { type: "create", from: `${this.runtimeUrl}/address-allocation`, to: this.allocationUrl, body: { value: { reclaim: [...this.allocated] } } },
        { direct: true },
      );
    }
    const bySource = new Map();
    for (const [res, src] of this._subscribed) {
      const key = `${src}\u0000${this._smOf(res)}`;
      if (!bySource.has(key)) bySource.set(key, { src, sm: this._smOf(res), list: [] });
      bySource.get(key).list.push(res);
    }
    for (const { src, sm, list } of bySource.values()) {
      await this.post({ type: "subscribe", from: this.syncher.manager, to: sm, body: { resources: list, source: src } }, { direct: true });
    }
    await this.syncher._resumed();
  }

  _smOf(resource) {
    const d = domainOf(resource);
    return d && d !== this.domain ? `domain://msg-node.${d}/sm` : this.smUrl;
  }

  _failAll(err) {
    for (const [k, p] of this._pending) {
      clearTimeout(p.timer);
      p.reject(err);
      this._pending.delete(k);
    }
    this._offline.length = 0;
  }

  _write(frame) {
    if (this._ws && this._ws.readyState === 1) this._ws.send(frame);
    else if (this._offline.length < MAX_OFFLINE) this._offline.push(frame);
    else throw new HypertyError(429, `more than ${MAX_OFFLINE} frames wait for the connection`);
  }

  /** @param {string} text */
  _frame(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return this._emit("error", new HypertyError(400, "unreadable frame from the node"));
    }
    if (!msg || typeof msg !== "object") return;
    msg.body = msg.body || {};
    if (msg.type === "response") {
      const key = `${msg.to}\u0000${String(msg.id)}`;
      const p = this._pending.get(key);
      const code = codeOf(msg);
      if (p) {
        if (code < 200) return p.progress && p.progress(msg);
        clearTimeout(p.timer);
        this._pending.delete(key);
        if (code < 300) p.resolve(msg);
        else {
          const err = new HypertyError(code, descOf(msg), msg);
          if (msg.to === this.runtimeUrl && code === 401 && this.status !== "live") this._fatal = err;
          p.reject(err);
        }
        return;
      }
      if (code >= 300) this._emit("error", new HypertyError(code, descOf(msg), msg));
      if (msg.to === "mn:/session" || msg.from === "mn:/session") return;
    }
    if (msg.type === "close" && msg.from === "mn:/session") {
      this._fatal = new HypertyError(codeOf(msg), descOf(msg), msg);
    }
    const handlers = this._listeners.get(msg.to);
    if (handlers && handlers.size) for (const h of [...handlers]) this._call(h, msg);
    else this._emit("message", msg);
  }

  _call(h, msg) {
    try {
      const r = h(msg);
      if (r && typeof r.catch === "function") r.catch((e) => this._emit("error", e));
    } catch (e) {
      this._emit("error", e);
    }
  }

  /**
   * Sends `msg` and resolves with its final response (code 200–299); a response
   * with another code rejects with a `HypertyError`, so does no answer within
   * `timeout` (408). Responses below 200 go to `onProgress`. Ids may be numbers or
   * strings; a message without one gets the next number.
   * @param {Message} msg
   * @param {{timeout?: number, onProgress?: (m: Message) => void, direct?: boolean}} [opts]
   * @returns {Promise<Message>}
   */
  post(msg, opts = {}) {
    if (this.status === "closed") return Promise.reject(new HypertyError(503, "the runtime is closed"));
    if (this._pending.size >= MAX_PENDING)
      return Promise.reject(new HypertyError(429, `more than ${MAX_PENDING} requests wait for answers`));
    const m = { ...msg, body: { ...(msg.body || {}) } };
    if (m.id === undefined || m.id === null || m.id === 0 || m.id === "") m.id = this._nextId++;
    const key = `${m.from}\u0000${String(m.id)}`;
    if (this._pending.has(key)) return Promise.reject(new HypertyError(400, `request ${m.id} from ${m.from} is already waiting`));
    const timeout = opts.timeout ?? this.timeout;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(key);
        reject(new HypertyError(408, `no response to ${m.type} ${m.to} within ${timeout} ms`));
      }, timeout);
      this._pending.set(key, { resolve, reject, timer, progress: opts.onProgress });
      const frame = JSON.stringify(m);
      try {
        if (opts.direct) {
          if (!this._ws || this._ws.readyState !== 1) throw new HypertyError(503, "not connected");
          this._ws.send(frame);
        } else this._write(frame);
      } catch (e) {
        clearTimeout(timer);
        this._pending.delete(key);
        reject(e);
      }
    });
  }

  /**
   * Sends `msg` without waiting for an answer.
   * @param {Message} msg
   */
  send(msg) {
    const m = { ...msg, body: msg.body || {} };
    if (m.id === undefined || m.id === null || m.id === 0) m.id = this._nextId++;
    this._write(JSON.stringify(m));
  }

  /**
   * Answers `req` with `code` and, if given, `value`.
   * @param {Message} req
   * @param {number} code
   * @param {any} [value]
   * @param {Record<string, any>} [extra] more body fields
   */
  reply(req, code, value, extra = {}) {
    const body = { code, ...extra };
    if (value !== undefined) body.value = value;
    this.send({ id: req.id, type: "response", from: req.to, to: req.from, body });
  }

  /**
   * Calls `handler` for every message to exactly `address`.
   * @param {string} address
   * @param {Handler} handler
   * @returns {{remove: () => void}}
   */
  listen(address, handler) {
    if (!this._listeners.has(address)) this._listeners.set(address, new Set());
    this._listeners.get(address).add(handler);
    return {
      remove: () => {
        const s = this._listeners.get(address);
        if (!s) return;
        s.delete(handler);
        if (!s.size) this._listeners.delete(address);
      },
    };
  }

  /**
   * Allocates addresses from the node (`hyperty://<D>/<uuid>` by default).
   * @param {{scheme?: string, number?: number}} [opts]
   * @returns {Promise<string[]>}
   */
  async allocateMany({ scheme = "hyperty", number = 1 } = {}) {
    const res = await this.post({
      type: "create",
      from: `${this.runtimeUrl}/address-allocation`,
      to: this.allocationUrl,
      body: { scheme, value: { number } },
    });
    const list = (res.body.value && res.body.value.allocated) || [];
    for (const a of list) this.allocated.add(a);
    return list;
  }

  /**
   * Allocates one address (a hyperty address unless `scheme` says otherwise).
   * @param {string} [scheme]
   * @returns {Promise<string>}
   */
  async allocate(scheme = "hyperty") {
    const [a] = await this.allocateMany({ scheme, number: 1 });
    if (!a) throw new HypertyError(500, "the node allocated nothing");
    return a;
  }

  /**
   * Frees allocated addresses.
   * @param {string[]} addresses
   */
  async release(addresses) {
    for (const a of addresses) this.allocated.delete(a);
    await this.post({ type: "delete", from: `${this.runtimeUrl}/address-allocation`, to: this.allocationUrl, body: { childrenResources: addresses } });
  }

  /**
   * Subscribes at the node's `/sm`: every message to one of `resources` reaches
   * this runtime (the sender's included). Kept across reconnects.
   * @param {string[]} resources
   * @param {{source?: string}} [opts] the subscriber (default: this runtime)
   */
  async subscribe(resources, { source = this.runtimeUrl } = {}) {
    const res = await this.post({ type: "subscribe", from: this.syncher.manager, to: this._smOf(resources[0] || ""), body: { resources, source } });
    for (const r of resources) this._subscribed.set(r, source);
    return res;
  }

  /**
   * Undoes `subscribe`.
   * @param {string[]} resources
   * @param {{source?: string}} [opts]
   */
  async unsubscribe(resources, { source = this.runtimeUrl } = {}) {
    for (const r of resources) this._subscribed.delete(r);
    return this.post({ type: "unsubscribe", from: this.syncher.manager, to: this._smOf(resources[0] || ""), body: { resources, source } });
  }

  /**
   * Renews the session with a fresh ID token.
   * @param {string} token
   */
  async renew(token) {
    this.options = { ...this.options, token };
    return this.post({ type: "update", from: this.runtimeUrl, to: "mn:/session", body: { idToken: token } });
  }

  /** Closes the session (`close`): the node frees everything it held for it. */
  async close() {
    if (this.status === "closed") return;
    const ws = this._ws;
    if (ws && ws.readyState === 1 && this.status === "live") {
      try {
        await this.post({ type: "close", from: this.runtimeUrl, to: "mn:/session" }, { timeout: 2000, direct: true });
      } catch {
        // the socket goes anyway
      }
    }
    this.status = "closed";
    for (const t of this._timers) clearTimeout(t);
    this._timers.clear();
    this.syncher._close();
    this._failAll(new HypertyError(503, "the runtime is closed"));
    if (ws && ws.readyState <= 1) ws.close(1000);
    this._ws = null;
    this._emit("status", "closed");
  }
}

/** Drops the fields whose value is `undefined`. */
const defined = (o) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));

/**
 * The domain registry of the runtime's domain (`domain://registry.<D>`): which
 * hyperty runs for which user, which data objects exist. Entries live `expires`
 * seconds after their last registration or keep-alive; the node marks a
 * runtime's entries `disconnected` while its session is away. A lookup that
 * finds nothing rejects with 404, one that finds only disconnected entries with
 * 408 (the entries are in the error's `response.body.value`).
 */
export class Registry {
  /** @param {Runtime} rt */
  constructor(rt) {
    this.rt = rt;
  }
  /** The registry's address. */
  get url() {
    return `domain://registry.${this.rt.domain}`;
  }

  async _ask(type, body) {
    const res = await this.rt.post({ type, from: `${this.rt.runtimeUrl}/registry`, to: this.url, body });
    return res.body.value;
  }

  /**
   * Registers (or replaces) the hyperty instance at `url`, hosted by this runtime.
   * @param {string} url a hyperty address this runtime allocated
   * @param {{user: string, descriptor: string, resources?: string[], dataSchemes?: string[], expires?: number, guid?: string}} entry
   *   `user`: the session's identity (a user URL); `resources`: `chat`, `audio`, `video`, …
   */
  registerHyperty(url, { user, descriptor, resources, dataSchemes, expires, guid }) {
    return this._ask("create", { value: defined({ url, user, descriptor, resources, dataSchemes, expires, guid, runtime: this.rt.runtimeUrl }) });
  }

  /**
   * Registers (or replaces) the data object at `url`, reported by `reporter`.
   * @param {string} url
   * @param {{name: string, schema: string, reporter: string, resources?: string[], dataSchemes?: string[], expires?: number}} entry
   */
  registerObject(url, { name, schema, reporter, resources, dataSchemes, expires }) {
    return this._ask("create", { value: defined({ url, name, schema, reporter, resources, dataSchemes, expires, runtime: this.rt.runtimeUrl }) });
  }

  /**
   * Looks up `resource`: a hyperty or object URL (that entry), a user URL or
   * `<name>@<domain>` (the user's hyperties, `{<url>: entry}`), a data object's
   * name (`{<url>: entry}`), or one of the registry's paths (`/dataobject/reporter/<r>`, …).
   * @param {string} resource
   * @param {{resources?: string[], dataSchemes?: string[]}} [criteria] what the hyperties must offer
   */
  lookup(resource, criteria) {
    return this._ask("read", defined({ resource, criteria }));
  }

  /**
   * The data objects offering every resource type and scheme asked for (of
   * `reporter`, if given): `{<url>: entry}`.
   * @param {{resources?: string[], dataSchemes?: string[], reporter?: string}} criteria
   */
  discover(criteria) {
    return this._ask("read", { criteria });
  }

  /**
   * Restarts the lifetime of the entry at `url`; `fields` (`{status: "live"}`, …)
   * change it as well.
   * @param {string} url
   * @param {Record<string, any>} [fields]
   */
  keepAlive(url, fields) {
    return this._ask("update", defined({ resource: url, value: fields }));
  }

  /** Removes the entry at `url`. @param {string} url */
  unregister(url) {
    return this._ask("delete", { resource: url });
  }
}

// ---- attribute paths (the Rust Syncher's `path` module) ----------------------

const index = (s) => (/^(0|[1-9][0-9]*)$/.test(s) ? Number(s) : null);

/** @param {string} path */
function segments(path) {
  if (path === "" || path == null) return [];
  const s = String(path).split(".");
  if (s.some((x) => x === "")) throw new HypertyError(400, `malformed attribute path ${JSON.stringify(path)}`);
  return s;
}

function parentOf(root, segs, path) {
  let v = root;
  for (const s of segs.slice(0, -1)) {
    if (Array.isArray(v)) {
      const i = index(s);
      if (i === null || i >= v.length) throw new HypertyError(404, `attribute ${path} not found`);
      v = v[i];
    } else if (v && typeof v === "object") {
      if (!(s in v) || v[s] === null || typeof v[s] !== "object") v[s] = {};
      v = v[s];
    } else throw new HypertyError(404, `attribute ${path} not found`);
  }
  return v;
}

/**
 * Applies one edit (the wire form of an `update`) to `data`; returns the new data.
 * @param {any} data
 * @param {{attribute?: string, value?: any, attributeType?: string, operation?: string}} b
 */
export function applyEdit(data, b) {
  const path = b.attribute ?? "";
  const segs = segments(path);
  if (b.attributeType === "array") {
    if (!segs.length) throw new HypertyError(400, `attribute ${path} is not an array item`);
    const root = structuredClone(data);
    const a = parentOf(root, segs, path);
    const i = index(segs[segs.length - 1]);
    if (!Array.isArray(a) || i === null) throw new HypertyError(400, `attribute ${path} is not an array item`);
    if (b.operation === "add") {
      if (i > a.length) throw new HypertyError(404, `attribute ${path} not found`);
      a.splice(i, 0, b.value);
    } else if (b.operation === "remove") {
      const n = b.value === undefined ? 1 : b.value;
      if (!(n > 0) || i + n > a.length) throw new HypertyError(404, `attribute ${path} not found`);
      a.splice(i, n);
    } else throw new HypertyError(400, `array operation ${b.operation}`);
    return root;
  }
  if (!segs.length) {
    if (!("value" in b)) throw new HypertyError(400, "an update without attribute must carry a value");
    return structuredClone(b.value);
  }
  const root = structuredClone(data ?? {});
  const p = parentOf(root, segs, path);
  const last = segs[segs.length - 1];
  if (Array.isArray(p)) {
    const i = index(last);
    if (i === null) throw new HypertyError(404, `attribute ${path} not found`);
    if (!("value" in b) || b.value === undefined) {
      if (i >= p.length) throw new HypertyError(404, `attribute ${path} not found`);
      p.splice(i, 1);
    } else if (i < p.length) p[i] = b.value;
    else if (i === p.length) p.push(b.value);
    else throw new HypertyError(404, `attribute ${path} not found`);
  } else if (p && typeof p === "object") {
    if (!("value" in b) || b.value === undefined) {
      if (!(last in p)) throw new HypertyError(404, `attribute ${path} not found`);
      delete p[last];
    } else p[last] = b.value;
  } else throw new HypertyError(404, `attribute ${path} not found`);
  return root;
}

/**
 * Applies a versioned change (a history entry: `type` plus the wire body) to a
 * snapshot in place. The version must be the next one.
 * @param {Snapshot} s
 * @param {Change} c
 */
export function applyChange(s, c) {
  if (c.version !== s.version + 1) throw new HypertyError(400, `stale version ${c.version}: the object is at version ${s.version}`);
  if (c.type === "create") {
    if (!c.resource) throw new HypertyError(400, "a child create needs body.resource (the child id)");
    const v = c.value;
    const data = v && typeof v === "object" && "data" in v && "parent" in v ? v.data : v;
    s.childrenObjects[c.resource] = { reporter: c.source, data: structuredClone(data ?? null) };
  } else if (c.resource) {
    const child = s.childrenObjects[c.resource];
    if (!child) throw new HypertyError(404, `child ${c.resource} not found`);
    child.data = applyEdit(child.data, c);
  } else s.data = applyEdit(s.data, c);
  s.version = c.version;
  s.lastModified = Math.max(s.lastModified || 0, c.lastModified || 0);
}

/**
 * @typedef {{url: string, scheme: string, name: string, reporter: string, schema?: string,
 *   version: number, data: any, childrenObjects: Record<string, {reporter: string, data: any}>,
 *   created: number, lastModified: number}} Snapshot
 * @typedef {{type: "update"|"create", version: number, source: string, lastModified?: number,
 *   resource?: string, attribute?: string, value?: any, attributeType?: string, operation?: string}} Change
 * @typedef {{type: "change", change: Change} | {type: "resync", version: number} | {type: "deleted"}
 *   | {type: "event", source: string, value: any} | {type: "subscribed"|"unsubscribed", observer: string}} SyncEvent
 */

/** Change events of one object, as a callback list and async iterators. */
class Stream {
  constructor() {
    /** @type {Set<(e: SyncEvent) => void>} */
    this._cbs = new Set();
    /** @type {Set<{queue: SyncEvent[], wake: Function | null}>} */
    this._its = new Set();
    this.ended = false;
  }
  /** @param {SyncEvent} e */
  push(e) {
    for (const cb of [...this._cbs]) {
      try {
        cb(e);
      } catch {
        // a failing callback does not stop the others
      }
    }
    for (const it of this._its) {
      if (it.queue.length >= ITERATOR_BUFFER) it.queue.splice(0, it.queue.length, { type: "resync", version: -1 });
      it.queue.push(e);
      if (it.wake) it.wake();
    }
  }
  end() {
    this.ended = true;
    for (const it of this._its) if (it.wake) it.wake();
  }
  iterator() {
    const it = { queue: [], wake: null };
    this._its.add(it);
    const self = this;
    return {
      async next() {
        for (;;) {
          if (it.queue.length) return { value: it.queue.shift(), done: false };
          if (self.ended) {
            self._its.delete(it);
            return { value: undefined, done: true };
          }
          await new Promise((r) => (it.wake = r));
          it.wake = null;
        }
      },
      async return() {
        self._its.delete(it);
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }
}

/** Common to reporters and observers: the snapshot and its events. */
class SyncObject {
  /** @param {Snapshot} snap */
  constructor(snap) {
    /** @type {Snapshot} */
    this._s = snap;
    this._stream = new Stream();
  }
  get url() {
    return this._s.url;
  }
  get version() {
    return this._s.version;
  }
  get data() {
    return this._s.data;
  }
  get children() {
    return this._s.childrenObjects;
  }
  get reporter() {
    return this._s.reporter;
  }
  /** @returns {Snapshot} a copy of the object's state */
  snapshot() {
    return structuredClone(this._s);
  }
  /**
   * Calls `cb` for every event; returns a function that stops it.
   * @param {(e: SyncEvent) => void} cb
   */
  onChange(cb) {
    this._stream._cbs.add(cb);
    return () => this._stream._cbs.delete(cb);
  }
  /** `for await (const ev of object)` */
  [Symbol.asyncIterator]() {
    return this._stream.iterator();
  }
}

/** The Syncher of a runtime: reports and observes data objects. */
export class Syncher {
  /** @param {Runtime} rt */
  constructor(rt) {
    this.rt = rt;
    /** @type {Map<string, ReporterObject>} */
    this.reported = new Map();
    /** @type {Map<string, ObserverObject>} */
    this.observed = new Map();
  }
  /** This runtime's SyncherManager address, `<runtime>/sm`. */
  get manager() {
    return `${this.rt.runtimeUrl}/sm`;
  }

  /**
   * Reports a new data object of `scheme` (`comm`, `connection`, `context`, …).
   * @param {string} scheme
   * @param {any} data its initial data
   * @param {{name?: string, schema?: string, reporter?: string, invite?: string[],
   *   history?: number, onSubscription?: (r: {observer: string, manager: string, identity?: any, invited: boolean}) => boolean | string}} [opts]
   *   `onSubscription`: `true` accepts, `false` or a reason rejects (403); default: accept
   * @returns {Promise<ReporterObject>}
   */
  async report(scheme, data, opts = {}) {
    const rt = this.rt;
    const reporter = opts.reporter || (await rt.allocate());
    const url = await rt.allocate(scheme);
    const now = Date.now();
    /** @type {Snapshot} */
    const snap = { url, scheme, name: opts.name || "", reporter, version: 0, data: structuredClone(data ?? {}), childrenObjects: {}, created: now, lastModified: now };
    if (opts.schema) snap.schema = opts.schema;
    const r = new ReporterObject(this, snap, opts);
    this.reported.set(url, r);
    r._listen();
    await rt.subscribe([url, `${url}/subscription`], { source: reporter });
    await r._audience();
    if (opts.invite && opts.invite.length) r.invite(opts.invite);
    return r;
  }

  /**
   * Observes the data object at `url`: subscribes at its node and asks its
   * reporter; resolves once the reporter accepted, with the snapshot in place.
   * @param {string} url
   * @param {{observer?: string, timeout?: number}} [opts] the observing hyperty (default: a fresh one)
   * @returns {Promise<ObserverObject>}
   */
  async observe(url, opts = {}) {
    const rt = this.rt;
    if (this.observed.has(url)) return this.observed.get(url);
    const observer = opts.observer || (await rt.allocate());
    const o = new ObserverObject(this, url, observer);
    this.observed.set(url, o);
    o._listen();
    try {
      await rt.subscribe([`${url}/changes`, `${url}/children/`], { source: observer });
      const res = await rt.post({ type: "subscribe", from: this.manager, to: `${url}/subscription`, body: { subscriber: observer } }, { timeout: opts.timeout });
      o._ready(res.body.value);
    } catch (e) {
      o._forget();
      throw e;
    }
    return o;
  }

  /**
   * Calls `handler` for every invitation to observe a data object that reaches
   * `address` (a `create` from `<object>/subscription`), once it is acknowledged
   * with 200. `identity` is who invited, as the node asserts it.
   * @param {string} address
   * @param {(inv: {object: string, scheme: string, name: string, reporter: string, identity?: string, message: Message}) => void} handler
   * @returns {{remove: () => void}}
   */
  onInvitation(address, handler) {
    const suffix = "/subscription";
    return this.rt.listen(address, (m) => {
      if (m.type !== "create" || typeof m.from !== "string" || !m.from.endsWith(suffix)) return;
      const object = m.from.slice(0, -suffix.length);
      const v = m.body.value;
      if (!v || typeof v !== "object" || (v.url !== undefined && v.url !== object))
        return this.rt.reply(m, 400, undefined, { description: "an invitation's body.value describes the object it comes from" });
      this.rt.reply(m, 200);
      const reporter = typeof v.reporter === "string" ? v.reporter : m.body.source;
      handler({ object, scheme: String(v.scheme ?? object.split(":")[0]), name: String(v.name ?? ""), reporter, identity: m.body.assertedIdentity, message: m });
    });
  }

  async _resumed() {
    for (const r of this.reported.values()) await r._audience();
    for (const o of this.observed.values()) o._fetch();
  }

  _close() {
    for (const o of this.observed.values()) o._stream.end();
    for (const r of this.reported.values()) r._stream.end();
  }
}

/** A data object this runtime reports: the authority over its versions. */
export class ReporterObject extends SyncObject {
  /**
   * @param {Syncher} sy
   * @param {Snapshot} snap
   * @param {any} opts
   */
  constructor(sy, snap, opts) {
    super(snap);
    this.sy = sy;
    this.rt = sy.rt;
    this._history = [];
    this._max = opts.history ?? HISTORY;
    this._policy = opts.onSubscription;
    /** @type {{hyperty: string, manager: string}[]} */
    this._links = [];
    this._invited = new Set();
    this._nextChild = 0;
    this._handles = [];
    this.deleted = false;
  }

  /** The accepted observers' hyperty addresses. */
  get observers() {
    return this._links.map((l) => l.hyperty);
  }

  _listen() {
    this._handles.push(this.rt.listen(this.url, (m) => this._onObject(m)));
    this._handles.push(this.rt.listen(`${this.url}/subscription`, (m) => this._onSubscription(m)));
  }

  /** Names the observers' managers as the object's audience at the node. */
  async _audience() {
    const audience = [...new Set(this._links.map((l) => l.manager))].sort();
    await this.rt.post({ type: "update", from: this.sy.manager, to: this.rt.smUrl, body: { resource: this.url, value: { audience } } });
  }

  /**
   * Sets who may observe: `true` accepts, `false` or a reason rejects.
   * @param {(r: {observer: string, manager: string, identity?: any, invited: boolean}) => boolean | string} policy
   */
  onSubscription(policy) {
    this._policy = policy;
  }

  /** @param {Message} m */
  _onSubscription(m) {
    if (m.type === "response") return;
    const b = m.body;
    if (m.type === "subscribe") {
      const observer = b.subscriber || b.source;
      if (typeof observer !== "string") return this.rt.reply(m, 400, undefined, { description: "missing field 'body.subscriber'" });
      const req = { observer, manager: m.from, identity: b.identity, invited: this._invited.has(observer) };
      const d = this._policy ? this._policy(req) : true;
      if (d !== true) return this.rt.reply(m, 403, undefined, { description: typeof d === "string" ? d : "subscription rejected" });
      if (!this._links.some((l) => l.hyperty === observer && l.manager === m.from)) this._links.push({ hyperty: observer, manager: m.from });
      const answer = () => this.rt.reply(m, 200, this.snapshot(), { resource: this.url, ...(this._s.schema ? { schema: this._s.schema } : {}) });
      // admitted at the node before the observer hears of it
      this._audience().then(answer, answer);
      this._stream.push({ type: "subscribed", observer });
    } else if (m.type === "unsubscribe") {
      const before = this._links.length;
      this._links = this._links.filter((l) => !(l.hyperty === b.source && l.manager === m.from));
      if (this._links.length === before) return this.rt.reply(m, 404, undefined, { description: `${b.source} as observer of ${this.url} not found` });
      this._audience().catch((e) => this.rt._emit("error", e));
      this.rt.reply(m, 200);
      this._stream.push({ type: "unsubscribed", observer: b.source });
    }
  }

  /** Reads (gap fetches) and child writes of observers, on `<obj>`. @param {Message} m */
  _onObject(m) {
    if (m.type === "response") return;
    const via = m.from;
    const b = m.body;
    if (m.type === "read") {
      if (!this._links.some((l) => l.manager === via))
        return this.rt.reply(m, 403, undefined, { description: `${via} has no accepted observer of ${this.url}` });
      const v = b.version;
      if (typeof v === "number") {
        const since = this._history.filter((c) => c.version > v);
        const complete = v === this._s.version || (since.length && since[0].version === v + 1);
        if (complete) return this.rt.reply(m, 200, { version: this._s.version, changes: since });
      }
      return this.rt.reply(m, 200, this.snapshot());
    }
    const source = b.source;
    const participant = source === this._s.reporter || this._links.some((l) => l.hyperty === source && l.manager === via);
    if (!participant) return this.rt.reply(m, 403, undefined, { description: `${source} neither reports nor observes ${this.url}` });
    const res = typeof b.resource === "string" ? b.resource : "";
    try {
      if (m.type === "create" && res === `${this.url}/children/`) {
        const data = b.value && typeof b.value === "object" && "data" in b.value && "parent" in b.value ? b.value.data : b.value;
        const id = this._child(source, data);
        return this.rt.reply(m, 200, { version: this._s.version }, { resource: id });
      }
      if (m.type === "update" && res.startsWith(`${this.url}/children/`)) {
        const id = res.slice(`${this.url}/children/`.length);
        const child = this._s.childrenObjects[id];
        if (!child) return this.rt.reply(m, 404, undefined, { description: `child ${id} of ${this.url} not found` });
        if (source !== child.reporter && source !== this._s.reporter)
          return this.rt.reply(m, 403, undefined, { description: `only ${child.reporter} or the reporter updates child ${id}` });
        const v = this._commit({ type: "update", source, resource: id, ...edit(b) });
        return this.rt.reply(m, 200, { version: v });
      }
      if (m.type === "event") {
        this._stream.push({ type: "event", source, value: b.value });
        this.rt.send({ type: "event", from: this.url, to: `${this.url}/children/`, body: { source, value: b.value } });
        return this.rt.reply(m, 200);
      }
      if (m.type === "update") return this.rt.reply(m, 403, undefined, { description: `only the reporter ${this._s.reporter} updates ${this.url}` });
      this.rt.reply(m, 400, undefined, { description: `${m.type} is not a request on ${this.url}` });
    } catch (e) {
      this.rt.reply(m, e.code || 500, undefined, { description: e.description || String(e) });
    }
  }

  /** Commits a change: next version, history, local events, observers. */
  _commit(change) {
    if (this.deleted) throw new HypertyError(404, `${this.url} was deleted`);
    const c = { ...change, version: this._s.version + 1, lastModified: Date.now() };
    const next = structuredClone(this._s);
    applyChange(next, c);
    this._s = next;
    this._history.push(c);
    if (this._history.length > this._max) this._history.shift();
    this._stream.push({ type: "change", change: c });
    if (this._links.length) {
      const { type, ...body } = c;
      const to = c.resource ? `${this.url}/children/` : `${this.url}/changes`;
      this.rt.send({ type, from: this.url, to, body });
    }
    return c.version;
  }

  _child(source, data) {
    this._nextChild += 1;
    const tag = source.split("/").pop().slice(0, 8);
    const id = `${tag}#${this._nextChild}`;
    this._commit({ type: "create", source, resource: id, value: { parent: this.url, reporter: source, data } });
    return id;
  }

  /** Sets `path` (dot separated; `""` replaces the data); returns the new version. */
  set(path, value) {
    return this._commit({ type: "update", source: this._s.reporter, attribute: path, value });
  }
  /** Deletes the attribute at `path`; returns the new version. */
  unset(path) {
    return this._commit({ type: "update", source: this._s.reporter, attribute: path });
  }
  /** Appends `value` to the array at `path`; returns the new version. */
  push(path, value) {
    const segs = segments(path);
    let a = this._s.data;
    for (const s of segs) a = a == null ? undefined : a[s];
    if (!Array.isArray(a)) throw new HypertyError(400, `attribute ${path} is not an array`);
    return this.insert(`${path}.${a.length}`, value);
  }
  /** Inserts `value` at `path` (`<array>.<index>`); returns the new version. */
  insert(path, value) {
    return this._commit({ type: "update", source: this._s.reporter, attribute: path, value, attributeType: "array", operation: "add" });
  }
  /** Removes `count` items from `path` (`<array>.<index>`); returns the new version. */
  remove(path, count = 1) {
    return this._commit({ type: "update", source: this._s.reporter, attribute: path, value: count, attributeType: "array", operation: "remove" });
  }
  /** Adds a child (`<obj>/children/`); returns its id. */
  addChild(data) {
    return this._child(this._s.reporter, data);
  }
  /** Sets `path` of child `id`; returns the new version. */
  updateChild(id, path, value) {
    if (!this._s.childrenObjects[id]) throw new HypertyError(404, `child ${id} of ${this.url} not found`);
    return this._commit({ type: "update", source: this._s.reporter, resource: id, attribute: path, value });
  }

  /**
   * Invites hyperties to observe (`create` from `<obj>/subscription`); resolves with
   * their answers' codes.
   * @param {string[]} invitees
   */
  invite(invitees) {
    const meta = { url: this.url, name: this._s.name, scheme: this._s.scheme, reporter: this._s.reporter, schema: this._s.schema ?? null };
    return Promise.all(
      invitees.map((to) => {
        this._invited.add(to);
        return this.rt
          .post({ type: "create", from: `${this.url}/subscription`, to, body: { source: this._s.reporter, value: meta, ...(this._s.schema ? { schema: this._s.schema } : {}) } })
          .then((r) => codeOf(r), (e) => e.code || 500)
          .then((code) => {
            this._stream.push({ type: "invitation", invitee: to, code });
            return code;
          });
      }),
    );
  }

  /** Deletes the object: observers are told, the address is freed. */
  async delete() {
    if (this.deleted) return;
    this.deleted = true;
    const url = this.url;
    if (this._links.length) this.rt.send({ type: "delete", from: `${url}/subscription`, to: `${url}/changes`, body: { resource: url } });
    this.sy.reported.delete(url);
    this._stream.push({ type: "deleted" });
    this._stream.end();
    await this.rt.unsubscribe([url, `${url}/subscription`], { source: this._s.reporter });
    // reads already on their way are answered 404 before the address goes
    this._handles.forEach((h) => h.remove());
    const gone = this.rt.listen(url, (m) => m.type !== "response" && this.rt.reply(m, 404, undefined, { description: `${url} not found` }));
    this.rt._later(5000, () => {
      gone.remove();
      if (this.rt.status !== "closed") this.rt.release([url]).catch(() => {});
    });
  }
}

/** The edit fields of a request body. */
const edit = (b) => {
  const e = { attribute: b.attribute };
  if ("value" in b) e.value = b.value;
  if (b.attributeType) e.attributeType = b.attributeType;
  if (b.operation) e.operation = b.operation;
  return e;
};

/** A replica of a data object reported elsewhere, kept in version order. */
export class ObserverObject extends SyncObject {
  /**
   * @param {Syncher} sy
   * @param {string} url
   * @param {string} observer
   */
  constructor(sy, url, observer) {
    super({ url, scheme: url.split(":")[0], name: "", reporter: "", version: 0, data: null, childrenObjects: {}, created: 0, lastModified: 0 });
    this.sy = sy;
    this.rt = sy.rt;
    this.observer = observer;
    /** @type {Map<number, Change>} */
    this._early = new Map();
    this._ready_ = false;
    this._fetching = false;
    this._handles = [];
    this.deleted = false;
    this.fetches = 0;
  }

  _listen() {
    const on = (m) => this._onPublished(m);
    this._handles.push(this.rt.listen(`${this.url}/changes`, on), this.rt.listen(`${this.url}/children/`, on));
  }

  _ready(snap) {
    if (!snap || snap.url !== this.url) throw new HypertyError(500, "the reporter answered another object");
    if (!snap.childrenObjects) snap.childrenObjects = {};
    if (!this._ready_ || snap.version > this._s.version) this._s = snap;
    this._ready_ = true;
    this._drain();
  }

  /** @param {Message} m */
  _onPublished(m) {
    const b = m.body;
    if (m.type === "delete" && m.from === `${this.url}/subscription`) {
      this.rt.reply(m, 200, undefined, { source: this.rt.runtimeUrl });
      return this._gone();
    }
    if (m.from !== this.url) return;
    if (m.type === "event") return this._stream.push({ type: "event", source: b.source || this.url, value: b.value });
    if (m.type !== "update" && m.type !== "create") return;
    if (typeof b.version !== "number" || typeof b.source !== "string") return;
    const c = { type: m.type, ...b };
    delete c.via;
    delete c.auth;
    delete c.assertedIdentity;
    this._receive(c);
  }

  /** @param {Change} c */
  _receive(c) {
    if (!this._ready_ || c.version > this._s.version + 1) {
      if (this._early.size < REORDER_BUFFER) this._early.set(c.version, c);
      if (this._ready_) this._fetch();
      return;
    }
    if (c.version <= this._s.version) return;
    if (this._apply(c)) this._drain();
  }

  _apply(c) {
    try {
      const next = structuredClone(this._s);
      applyChange(next, c);
      this._s = next;
      this._stream.push({ type: "change", change: c });
      return true;
    } catch {
      this._early.clear();
      this._fetch(true);
      return false;
    }
  }

  _drain() {
    for (;;) {
      const keys = [...this._early.keys()].sort((a, b) => a - b);
      if (!keys.length) return;
      const v = keys[0];
      if (v <= this._s.version) {
        this._early.delete(v);
        continue;
      }
      if (v > this._s.version + 1) return this._fetch();
      const c = this._early.get(v);
      this._early.delete(v);
      if (!this._apply(c)) return;
    }
  }

  /** Asks the reporter for what came after our version (`snapshot`: everything). */
  _fetch(snapshot = false) {
    if (this._fetching || !this._ready_ || this.deleted) return;
    this._fetching = true;
    this.fetches += 1;
    const body = snapshot ? {} : { version: this._s.version };
    this.rt
      .post({ type: "read", from: this.sy.manager, to: this.url, body }, { timeout: 5000 })
      .then((res) => {
        this._fetching = false;
        const v = res.body.value || {};
        const before = this._s.version;
        if (Array.isArray(v.changes)) {
          for (const c of v.changes) if (c.version === this._s.version + 1) this._apply(c);
        } else if (v.url === this.url && v.version >= before) {
          if (!v.childrenObjects) v.childrenObjects = {};
          this._s = v;
          for (const k of [...this._early.keys()]) if (k <= v.version) this._early.delete(k);
          this._stream.push({ type: "resync", version: v.version });
        }
        if (this._s.version === before && this._early.size) this._early.clear();
        this._drain();
      })
      .catch((e) => {
        this._fetching = false;
        if (e.code === 404) return this._gone();
        if (this._early.size && this.rt.status !== "closed") this.rt._later(1000, () => this._fetch());
      });
  }

  /** Adds a child through the reporter; resolves with its id. */
  async addChild(data) {
    const res = await this.rt.post({ type: "create", from: this.sy.manager, to: this.url, body: { resource: `${this.url}/children/`, source: this.observer, value: data } });
    return res.body.resource;
  }

  /** Sets `path` of child `id` (one this observer created); resolves with the version. */
  async updateChild(id, path, value) {
    const res = await this.rt.post({ type: "update", from: this.sy.manager, to: this.url, body: { resource: `${this.url}/children/${id}`, source: this.observer, attribute: path, value } });
    return res.body.value && res.body.value.version;
  }

  /** Stops observing. */
  async unsubscribe() {
    if (this.deleted) return;
    await this.rt.post({ type: "unsubscribe", from: this.sy.manager, to: `${this.url}/subscription`, body: { source: this.observer } }).catch(() => {});
    this._forget();
    await this.rt.unsubscribe([`${this.url}/changes`, `${this.url}/children/`], { source: this.observer }).catch(() => {});
  }

  _forget() {
    this.sy.observed.delete(this.url);
    this._handles.forEach((h) => h.remove());
    for (const r of [`${this.url}/changes`, `${this.url}/children/`]) this.rt._subscribed.delete(r);
  }

  _gone() {
    if (this.deleted) return;
    this.deleted = true;
    this._stream.push({ type: "deleted" });
    this._stream.end();
    this._forget();
    this.rt.unsubscribe([`${this.url}/changes`, `${this.url}/children/`], { source: this.observer }).catch(() => {});
  }
}
