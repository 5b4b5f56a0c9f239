// The node's demo page: sign up or log in at the node's identity provider, see
// who is online (the domain registry), chat, and place a WebRTC call.
//
// * Online: every page registers its hyperty in the domain registry (under the
//   logged-in user) and reports a presence object named LOBBY, registered there
//   too; the list is the live LOBBY objects, each reporter's user read from its
//   hyperty entry. Entries are kept alive while the page is open.
// * Chat: a `create` from one hyperty to the other with `body.value = {type:
//   "chat", text}`, answered 200; the sender shown is the identity the node
//   asserts (`body.assertedIdentity`), never what the message claims.
// * Call (seed 000's H2H procedure): the caller reports a `connection://` object
//   holding its offer and invites the callee; the callee, invited, observes it,
//   and on accept reports its own holding the answer and invites the caller. ICE
//   candidates are children of each side's object; `status` goes ringing →
//   connected → ended; hanging up sets ended and deletes the object, and the
//   other side, seeing that, does the same. Media and a data channel flow peer to
//   peer.
//
// Everything shown is set with textContent: nothing received is parsed as HTML.

import { connect, HypertyError } from "/client/hyperty.js";

const LOBBY = "hyperty-demo-lobby";
const KEEPALIVE_MS = 20000;
const ENTRY_EXPIRES_S = 60;
const REFRESH_MS = 2000;
const MAX_TEXT = 2000;
/** Most messages a log keeps (the oldest go first). */
const MAX_LOG = 500;

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

/** Appends `item` to the log `list`, dropping the oldest past MAX_LOG. */
function log(list, item) {
  list.append(item);
  while (list.children.length > MAX_LOG) list.firstElementChild?.remove();
}

/** Builds an element; strings become text, never markup. */
function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(e.dataset, v);
    else if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, String(v));
  }
  for (const c of children) e.append(typeof c === "string" ? document.createTextNode(c) : c);
  return e;
}

const nameOf = (user) => (typeof user === "string" ? user.split("/").pop() || user : "someone");
const clip = (s) => String(s).slice(0, MAX_TEXT);
const time = () => new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

function notice(text, kind = "info") {
  const n = $("notice");
  n.textContent = text;
  n.dataset.kind = kind;
}

const problem = (e) => (e instanceof HypertyError ? `${e.description} (${e.code})` : String(e && e.message ? e.message : e));

/** @type {{rt: any, me: string, user: string, lobby: any, timers: any[]} | null} */
let session = null;
/** hyperty URL → user URL, of the people seen online */
const people = new Map();
/** hyperty URL → messages of the conversation with it */
const conversations = new Map();
let chatPeer = null;

// ---- log in -----------------------------------------------------------------

async function idp(path, body) {
  const res = await fetch(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const json = await res.json().catch(() => ({}));
  if (!res.ok) throw new HypertyError(res.status, json.description || res.statusText);
  return json;
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const action = /** @type {SubmitEvent} */ (ev).submitter?.value || "login";
  const username = /** @type {HTMLInputElement} */ ($("username")).value.trim();
  const password = /** @type {HTMLInputElement} */ ($("password")).value;
  const buttons = [$("login-button"), $("signup-button")];
  buttons.forEach((b) => (b.disabled = true));
  try {
    if (action === "signup") {
      notice("Signing up…");
      await idp("/idp/users", { username, password });
    }
    notice("Logging in…");
    const login = await idp("/idp/login", { username, password });
    /** @type {HTMLInputElement} */ ($("password")).value = "";
    await start(login.idToken, login.userURL);
  } catch (e) {
    notice(`Could not ${action === "signup" ? "sign up" : "log in"}: ${problem(e)}`, "error");
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
});

/** Opens the session with the ID token and goes online. */
async function start(token, user) {
  const ws = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  const rt = await connect({ url: ws, token });
  let me, lobby;
  try {
    me = await rt.allocate();
    const catalogue = `hyperty-catalogue://catalogue.${rt.domain}/.well-known`;
    const hyperty = { user, descriptor: `${catalogue}/hyperty/DemoConnector`, resources: ["chat", "audio", "video"], dataSchemes: ["connection"], expires: ENTRY_EXPIRES_S };
    await rt.registry.registerHyperty(me, hyperty);
    lobby = await rt.syncher.report("context", { user, since: Date.now() }, { reporter: me, name: LOBBY, onSubscription: () => "presence is read through the registry" });
    const presence = { name: LOBBY, reporter: me, schema: `${catalogue}/dataschema/Context`, resources: ["presence"], dataSchemes: ["context"], expires: ENTRY_EXPIRES_S };
    await rt.registry.registerObject(lobby.url, presence);
  } catch (e) {
    await rt.close();
    throw e;
  }
  session = { rt, me, user, lobby, timers: [] };

  rt.listen(me, onChat);
  rt.syncher.onInvitation(me, (inv) => onInvitation(inv).catch((e) => notice(`Call failed: ${problem(e)}`, "error")));
  rt.on("status", (s) => {
    if (s === "disconnected") notice("Connection to the node lost; reconnecting…", "error");
    if (s === "reconnected") {
      notice("Reconnected.");
      keepAlive();
    }
    if (s === "closed" && session && session.rt === rt) stop("The node closed the session; log in again.");
  });
  session.timers.push(setInterval(keepAlive, KEEPALIVE_MS), setInterval(refresh, REFRESH_MS));

  $("me-name").textContent = nameOf(user);
  $("whoami").hidden = false;
  $("login").hidden = true;
  $("app").hidden = false;
  notice(`Logged in as ${nameOf(user)}.`);
  document.title = `${nameOf(user)} · hyperty demo`;
  await refresh();
}

/** Keeps the registry entries alive (and live again after a reconnect). */
function keepAlive() {
  if (!session) return;
  const { rt, me, lobby } = session;
  for (const url of [me, lobby.url]) rt.registry.keepAlive(url, { status: "live" }).catch(() => {});
}

async function stop(message) {
  const s = session;
  if (!s) return;
  session = null;
  s.timers.forEach(clearInterval);
  await hangup("You logged out.");
  if (s.rt.status === "live") {
    await Promise.allSettled([s.rt.registry.unregister(s.lobby.url), s.rt.registry.unregister(s.me)]);
    await s.lobby.delete().catch(() => {});
  }
  await s.rt.close();
  people.clear();
  conversations.clear();
  shownKey = "";
  chatPeer = null;
  $("online").replaceChildren();
  $("messages").replaceChildren();
  $("dc-messages").replaceChildren();
  $("chat-title").textContent = "Chat";
  $("chat-with").textContent = "Choose someone to chat with.";
  for (const id of ["chat-text", "chat-send"]) /** @type {HTMLInputElement} */ ($(id)).disabled = true;
  call = null;
  setCall("idle", "No call.");
  $("whoami").hidden = true;
  $("app").hidden = true;
  $("login").hidden = false;
  document.title = "hyperty demo: chat and call";
  notice(message);
}

$("logout").addEventListener("click", () => stop("Logged out."));
window.addEventListener("pagehide", () => session && session.rt.close());

// ---- who is online ----------------------------------------------------------

/** The live presence objects' reporters, with their users. */
async function online() {
  const { rt, me } = /** @type {NonNullable<typeof session>} */ (session);
  let objects;
  try {
    objects = await rt.registry.lookup(LOBBY);
  } catch (e) {
    if (e instanceof HypertyError && (e.code === 404 || e.code === 408)) return [];
    throw e;
  }
  const list = [];
  for (const o of Object.values(objects || {})) {
    if (!o || o.status !== "live" || typeof o.reporter !== "string" || o.reporter === me) continue;
    if (!people.has(o.reporter)) {
      try {
        const h = await rt.registry.lookup(o.reporter);
        if (h && typeof h.userID === "string") people.set(o.reporter, h.userID);
      } catch {
        continue;
      }
    }
    const user = people.get(o.reporter);
    if (user) list.push({ hyperty: o.reporter, user });
  }
  return list.sort((a, b) => a.user.localeCompare(b.user) || a.hyperty.localeCompare(b.hyperty));
}

let refreshing = false;
async function refresh() {
  if (!session || refreshing) return;
  refreshing = true;
  try {
    render(await online());
  } catch (e) {
    notice(`Could not read who is online: ${problem(e)}`, "error");
  } finally {
    refreshing = false;
  }
}
$("refresh").addEventListener("click", refresh);

/** What the list shows now, and as a key to tell when it changes. */
let shown = [];
let shownKey = "";

function render(list) {
  const key = JSON.stringify(list.map((p) => [p.hyperty, p.user, conversations.get(p.hyperty)?.unread || 0]));
  if (key === shownKey) return;
  shown = list;
  shownKey = key;
  const ul = $("online");
  const seen = new Map();
  const items = list.map(({ hyperty, user }) => {
    const n = (seen.get(user) || 0) + 1;
    seen.set(user, n);
    const name = nameOf(user) + (n > 1 ? ` (${n})` : "");
    const unread = conversations.get(hyperty)?.unread || 0;
    return el(
      "li",
      { dataset: { hyperty, user: nameOf(user) } },
      el("span", { class: "name" }, name),
      unread ? el("span", { class: "badge", "aria-label": `${unread} unread` }, String(unread)) : "",
      el("button", { type: "button", "aria-label": `Chat with ${name}`, dataset: { action: "chat" }, onclick: () => openChat(hyperty) }, "Chat"),
      el("button", { type: "button", "aria-label": `Call ${name}`, dataset: { action: "call" }, onclick: () => placeCall(hyperty, user).catch((e) => failCall(e)) }, "Call"),
    );
  });
  // the list is rebuilt: keep the keyboard focus on the same button
  const focused = /** @type {HTMLElement | null} */ (document.activeElement);
  const was = focused && ul.contains(focused) ? { hyperty: focused.closest("li")?.dataset.hyperty, action: focused.dataset.action } : null;
  ul.replaceChildren(...items);
  if (was) {
    const li = items.find((x) => x.dataset.hyperty === was.hyperty);
    li?.querySelector(`button[data-action="${was.action}"]`)?.focus();
  }
  $("nobody").hidden = list.length > 0;
}

// ---- chat -------------------------------------------------------------------

function conversation(hyperty) {
  if (!conversations.has(hyperty)) conversations.set(hyperty, { messages: [], unread: 0 });
  return conversations.get(hyperty);
}

function openChat(hyperty, focus = true) {
  chatPeer = hyperty;
  const c = conversation(hyperty);
  c.unread = 0;
  const name = nameOf(people.get(hyperty));
  $("chat-title").textContent = `Chat with ${name}`;
  $("chat-with").textContent = "";
  $("messages").replaceChildren(...c.messages.map(messageItem));
  for (const id of ["chat-text", "chat-send"]) /** @type {HTMLInputElement} */ ($(id)).disabled = false;
  if (focus) $("chat-text").focus();
  refresh();
}

function messageItem(m) {
  return el(
    "li",
    { class: m.mine ? "mine" : "theirs", dataset: { state: m.state || "" } },
    el("span", { class: "who" }, m.mine ? "You" : m.who),
    el("span", { class: "text" }, m.text),
    el("span", { class: "meta" }, [m.time, m.state === "failed" ? `not delivered: ${m.error}` : ""].filter(Boolean).join(" · ")),
  );
}

function addMessage(hyperty, m) {
  const c = conversation(hyperty);
  c.messages.push(m);
  if (c.messages.length > MAX_LOG) c.messages.shift();
  if (chatPeer === hyperty) log($("messages"), messageItem(m));
  else {
    c.unread += 1;
    render(shown);
  }
}

function onChat(m) {
  if (m.type !== "create" || !m.body.value || m.body.value.type !== "chat") return;
  const s = /** @type {NonNullable<typeof session>} */ (session);
  if (typeof m.body.value.text !== "string" || m.body.value.text.length > MAX_TEXT)
    return s.rt.reply(m, 400, undefined, { description: `a chat message is a text of at most ${MAX_TEXT} characters` });
  s.rt.reply(m, 200);
  const who = typeof m.body.assertedIdentity === "string" ? m.body.assertedIdentity : people.get(m.from);
  if (who && !people.has(m.from)) people.set(m.from, who);
  addMessage(m.from, { mine: false, who: nameOf(who), text: m.body.value.text, time: time() });
  if (chatPeer === null) openChat(m.from, false);
}

$("chat-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = /** @type {HTMLInputElement} */ ($("chat-text"));
  const text = clip(input.value);
  if (!text || !session || !chatPeer) return;
  const peer = chatPeer;
  input.value = "";
  const m = { mine: true, text, time: time(), state: "sending" };
  addMessage(peer, m);
  const { rt, me } = session;
  try {
    await rt.post({ type: "create", from: me, to: peer, body: { value: { type: "chat", text } } }, { timeout: 10000 });
    m.state = "delivered";
  } catch (e) {
    m.state = "failed";
    m.error = problem(e);
  }
  if (chatPeer === peer) $("messages").replaceChildren(...conversation(peer).messages.map(messageItem));
});

// ---- call -------------------------------------------------------------------

/**
 * The call in progress.
 * @type {null | {peer: string, user: string, role: "caller"|"callee", pc: RTCPeerConnection | null,
 *   dc: RTCDataChannel | null, mine: any, theirs: any, stream: MediaStream | null, pending: any[],
 *   remoteSet: boolean, early: any[], applied: Set<string>, ended: boolean, invitation?: any,
 *   theirsGone: Promise<void>, gone: () => void}}
 */
let call = null;

function setCall(state, text) {
  $("call").dataset.state = state;
  $("call-status").textContent = text;
  const active = call !== null && !call.ended;
  /** @type {HTMLButtonElement} */ ($("hangup")).disabled = !active;
}

function failCall(e) {
  notice(`Call failed: ${problem(e)}`, "error");
  hangup(`Call failed: ${problem(e)}`);
}

async function media() {
  for (const constraints of [{ audio: true, video: true }, { audio: true }]) {
    try {
      return await navigator.mediaDevices.getUserMedia(constraints);
    } catch {
      // try with less
    }
  }
  notice("No camera or microphone: the call carries the direct messages only.", "error");
  return null;
}

/** A peer connection for the call, wired to its objects and the page. */
function peerConnection(c) {
  const pc = new RTCPeerConnection();
  c.pc = pc;
  if (c.stream) for (const t of c.stream.getTracks()) pc.addTrack(t, c.stream);
  pc.onicecandidate = (e) => {
    if (!e.candidate) return;
    const cand = e.candidate.toJSON();
    if (c.mine) c.mine.addChild({ candidate: cand });
    else c.pending.push(cand);
  };
  pc.ontrack = (e) => {
    const v = /** @type {HTMLVideoElement} */ ($("remote-video"));
    if (v.srcObject !== e.streams[0]) v.srcObject = e.streams[0] || new MediaStream([e.track]);
  };
  pc.ondatachannel = (e) => channel(c, e.channel);
  pc.onconnectionstatechange = () => {
    $("call").dataset.peerConnection = pc.connectionState;
    if (call !== c || c.ended) return;
    if (pc.connectionState === "connected") {
      setCall("connected", `In a call with ${nameOf(c.user)}.`);
      c.mine?.set("status", "connected");
    } else if (pc.connectionState === "failed") failCall(new Error("no media path to the other side"));
  };
  return pc;
}

function channel(c, dc) {
  c.dc = dc;
  const enable = (on) => {
    for (const id of ["dc-text", "dc-send"]) /** @type {HTMLInputElement} */ ($(id)).disabled = !on;
  };
  dc.onopen = () => enable(true);
  dc.onclose = () => enable(false);
  dc.onmessage = (e) => {
    if (typeof e.data !== "string") return;
    log($("dc-messages"), el("li", { class: "theirs" }, el("span", { class: "who" }, nameOf(c.user)), el("span", { class: "text" }, clip(e.data))));
  };
  if (dc.readyState === "open") enable(true);
}

$("dc-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = /** @type {HTMLInputElement} */ ($("dc-text"));
  const text = clip(input.value);
  if (!text || !call || !call.dc || call.dc.readyState !== "open") return;
  call.dc.send(text);
  input.value = "";
  log($("dc-messages"), el("li", { class: "mine" }, el("span", { class: "who" }, "You"), el("span", { class: "text" }, text)));
});

function showLocal(stream) {
  /** @type {HTMLVideoElement} */ ($("local-video")).srcObject = stream;
}

/** The other side's connection description and candidates, once it is observed. */
function follow(c, theirs) {
  c.theirs = theirs;
  const take = (id, child) => {
    if (c.applied.has(id)) return;
    c.applied.add(id);
    const cand = child && child.data && child.data.candidate;
    if (!cand || typeof cand !== "object") return;
    if (c.remoteSet) c.pc?.addIceCandidate(cand).catch(() => {});
    else c.early.push(cand);
  };
  for (const [id, child] of Object.entries(theirs.children)) take(id, child);
  theirs.onChange((e) => {
    if (e.type === "deleted") {
      c.gone();
      if (call === c) $("call").dataset.theirs = "deleted";
    }
    if (call !== c || c.ended) return;
    if (e.type === "deleted") return hangup(`${nameOf(c.user)} hung up.`);
    if (e.type === "change" && e.change.type === "create") take(e.change.resource, theirs.children[e.change.resource]);
    if (e.type === "change" && e.change.attribute === "status" && e.change.value === "ended") hangup(`${nameOf(c.user)} hung up.`);
  });
}

async function remote(c, description) {
  await c.pc.setRemoteDescription(description);
  c.remoteSet = true;
  for (const cand of c.early.splice(0)) await c.pc.addIceCandidate(cand).catch(() => {});
}

/** Reports this side's connection object with `description` and invites the peer. */
async function report(c, description) {
  const { rt, me } = /** @type {NonNullable<typeof session>} */ (session);
  const data = { owner: me, peer: c.peer, status: "ringing", connectionDescription: { type: description.type, sdp: description.sdp } };
  c.mine = await rt.syncher.report("connection", data, {
    reporter: me,
    name: "call",
    invite: [c.peer],
    onSubscription: (r) => r.observer === c.peer || "only the other side of the call observes it",
  });
  for (const cand of c.pending.splice(0)) c.mine.addChild({ candidate: cand });
  c.mine.onChange((e) => {
    if (call !== c || c.ended) return;
    if (e.type === "invitation" && e.code !== 200) hangup(`${nameOf(c.user)} could not be reached (${e.code}).`);
    if (e.type === "unsubscribed" && e.observer === c.peer && !c.theirs) hangup(`${nameOf(c.user)} declined.`);
  });
}

function newCall(peer, user, role) {
  let gone = () => {};
  const theirsGone = new Promise((resolve) => (gone = resolve));
  call = { peer, user, role, pc: null, dc: null, mine: null, theirs: null, stream: null, pending: [], remoteSet: false, early: [], applied: new Set(), ended: false, theirsGone, gone };
  $("dc-messages").replaceChildren();
  $("call").dataset.mine = "";
  $("call").dataset.theirs = "";
  return call;
}

/** Alice calls: offer in her connection object, Bob invited. */
async function placeCall(peer, user) {
  if (!session) return;
  if (call && !call.ended) return notice("Hang up first: one call at a time.", "error");
  const c = newCall(peer, user, "caller");
  setCall("ringing", `Calling ${nameOf(user)}…`);
  c.stream = await media();
  if (call !== c || c.ended) return;
  showLocal(c.stream);
  const pc = peerConnection(c);
  channel(c, pc.createDataChannel("chat"));
  await pc.setLocalDescription(await pc.createOffer());
  await report(c, /** @type {RTCSessionDescription} */ (pc.localDescription));
}

/** An invitation: a call to answer, or the answer to our call. */
async function onInvitation(inv) {
  if (inv.scheme !== "connection" || !session) return;
  const { rt, me } = session;
  if (call && !call.ended && call.role === "caller" && call.peer === inv.reporter && !call.theirs) {
    const c = call;
    const theirs = await rt.syncher.observe(inv.object, { observer: me });
    const d = theirs.data || {};
    if (d.owner !== inv.reporter || d.peer !== me || d.connectionDescription?.type !== "answer" || typeof d.connectionDescription.sdp !== "string") {
      await theirs.unsubscribe();
      return failCall(new Error("the answer was malformed"));
    }
    follow(c, theirs);
    setCall("ringing", `${nameOf(c.user)} answered; connecting…`);
    await remote(c, { type: "answer", sdp: d.connectionDescription.sdp });
    return;
  }
  const theirs = await rt.syncher.observe(inv.object, { observer: me });
  const d = theirs.data || {};
  const valid = d.owner === inv.reporter && d.peer === me && d.status === "ringing" && d.connectionDescription?.type === "offer" && typeof d.connectionDescription.sdp === "string";
  if (!valid || (call && !call.ended)) return theirs.unsubscribe();
  const user = inv.identity || people.get(inv.reporter) || "someone";
  const c = newCall(inv.reporter, user, "callee");
  c.invitation = d.connectionDescription;
  follow(c, theirs);
  $("incoming-text").textContent = `${nameOf(user)} is calling.`;
  $("incoming").hidden = false;
  setCall("ringing", `${nameOf(user)} is calling.`);
  $("accept").focus();
}

$("accept").addEventListener("click", () => accept().catch((e) => failCall(e)));
$("decline").addEventListener("click", () => {
  const c = call;
  if (!c || c.role !== "callee" || c.mine) return;
  hangup("You declined the call.");
});

/** Bob accepts: answer in his connection object, Alice invited. */
async function accept() {
  const c = call;
  if (!c || c.ended || c.role !== "callee" || c.mine) return;
  $("incoming").hidden = true;
  setCall("ringing", `Connecting to ${nameOf(c.user)}…`);
  c.stream = await media();
  if (call !== c || c.ended) return;
  showLocal(c.stream);
  const pc = peerConnection(c);
  await remote(c, { type: "offer", sdp: c.invitation.sdp });
  await pc.setLocalDescription(await pc.createAnswer());
  await report(c, /** @type {RTCSessionDescription} */ (pc.localDescription));
}

/** How long a hung-up call waits for the other side to delete its object, ms. */
const PEER_DELETE_MS = 5000;

/**
 * Ends the call: media stopped, our object's status ended and the object
 * deleted; the other side, seeing that, deletes its own (if it does not in
 * time, or never answered, we stop observing it).
 */
async function hangup(text = "Call ended.") {
  const c = call;
  if (!c || c.ended) return;
  c.ended = true;
  $("incoming").hidden = true;
  setCall("ended", text);
  c.pc?.close();
  $("call").dataset.peerConnection = "closed";
  c.stream?.getTracks().forEach((t) => t.stop());
  /** @type {HTMLVideoElement} */ ($("remote-video")).srcObject = null;
  /** @type {HTMLVideoElement} */ ($("local-video")).srcObject = null;
  for (const id of ["dc-text", "dc-send"]) /** @type {HTMLInputElement} */ ($(id)).disabled = true;
  if (c.mine) {
    try {
      c.mine.set("status", "ended");
    } catch {
      // already deleted
    }
    await c.mine.delete().catch(() => {});
    if (call === c) $("call").dataset.mine = "deleted";
  }
  if (c.theirs && !c.theirs.deleted) {
    if (c.mine) await Promise.race([c.theirsGone, new Promise((r) => setTimeout(r, PEER_DELETE_MS))]);
    if (!c.theirs.deleted) await c.theirs.unsubscribe().catch(() => {});
  }
}

$("hangup").addEventListener("click", () => hangup("You hung up."));
