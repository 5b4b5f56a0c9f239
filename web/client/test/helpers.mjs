// Shared by the tests: where the node is (set by tests/js_client.rs), ID tokens
// from its identity provider, and a deadline for waiting on events.
import assert from "node:assert/strict";
import { connect } from "../hyperty.js";

export const WS = process.env.HYPERTY_WS;
export const HTTP = process.env.HYPERTY_HTTP;
export const DOMAIN = process.env.HYPERTY_DOMAIN;
export const DRIVER = process.env.HYPERTY_DRIVER;
assert.ok(WS && HTTP && DOMAIN && DRIVER, "run these tests through `cargo test --test js_client`");

let users = 0;

/** Registers a fresh user at the node's identity provider and logs in: an ID token. */
export async function idToken() {
  return (await login()).token;
}

/** Registers a fresh user and logs in: the ID token and the user's URL. */
export async function login() {
  users += 1;
  const user = { username: `js${process.pid}x${users}`, password: "correct horse battery" };
  const post = (path) =>
    fetch(`${HTTP}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(user) });
  const reg = await post("/idp/users");
  assert.equal(reg.status, 201, await reg.text());
  const res = await post("/idp/login");
  assert.equal(res.status, 200);
  const body = await res.json();
  return { token: body.idToken, user: body.userURL };
}

/** A runtime connected with a fresh user's token. */
export async function runtime(opts = {}) {
  return connect({ url: WS, token: await idToken(), ...opts });
}

/** Resolves with the first value `take` returns for a message to `address`. */
export function next(rt, address, take = (m) => m) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`nothing for ${address} in time`)), 10000);
    const l = rt.listen(address, (m) => {
      const v = take(m);
      if (v === undefined) return;
      clearTimeout(t);
      l.remove();
      resolve(v);
    });
  });
}

/** Asks the Rust runtime's driver hyperty to do `method`. */
export async function drive(rt, from, method, params = {}, timeout = 15000) {
  const res = await rt.post({ type: "execute", from, to: DRIVER, body: { method, params } }, { timeout });
  return res.body.value;
}

/** The next event of `obj` satisfying `pred`. */
export async function until(obj, pred) {
  for await (const ev of obj) if (pred(ev)) return ev;
  throw new Error("the object's events ended");
}
