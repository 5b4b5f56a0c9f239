// The domain registry through the client (`rt.registry`), and invitations to
// observe (`syncher.onInvitation`): what a page needs to show who is online and
// to be called.
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "../hyperty.js";
import { WS, login, runtime, until } from "./helpers.mjs";

const DESCRIPTOR = "hyperty-catalogue://catalogue.example.com/.well-known/hyperty/Connector";

test("registry: a hyperty registered under the session's identity is found, kept alive, and removed", async () => {
  const { token, user } = await login();
  const rt = await connect({ url: WS, token });
  const other = await runtime();
  try {
    const me = await rt.allocate();
    await rt.registry.registerHyperty(me, { user, descriptor: DESCRIPTOR, resources: ["chat", "audio"], dataSchemes: ["connection"] });
    const found = await other.registry.lookup(user);
    assert.deepEqual(Object.keys(found), [me]);
    assert.equal(found[me].userID, user);
    assert.equal(found[me].hypertyID, me);
    assert.equal(found[me].status, "live");
    assert.equal(found[me].runtime, rt.runtimeUrl);
    assert.deepEqual(found[me].resources, ["chat", "audio"]);
    assert.deepEqual(Object.keys(await other.registry.lookup(user, { resources: ["chat"] })), [me]);
    await assert.rejects(other.registry.lookup(user, { resources: ["video"] }), (e) => e.code === 404);

    // another session may not register a hyperty for this user, nor one it does not hold
    const foreign = await other.allocate();
    await assert.rejects(other.registry.registerHyperty(foreign, { user, descriptor: DESCRIPTOR }), (e) => e.code === 403 && /identity/.test(e.description));
    await assert.rejects(other.registry.unregister(me), (e) => e.code === 403);
    await assert.rejects(rt.registry.registerHyperty(me, { user, descriptor: "" }), (e) => e.code === 400);

    const alive = await rt.registry.keepAlive(me);
    assert.equal(alive.status, "live");
    await rt.registry.unregister(me);
    await assert.rejects(other.registry.lookup(user), (e) => e.code === 404);
  } finally {
    await rt.close();
    await other.close();
  }
});

test("registry: data objects are found by name and by criteria, with their reporter", async () => {
  const { token } = await login();
  const rt = await connect({ url: WS, token });
  const other = await runtime();
  try {
    const me = await rt.allocate();
    const obj = await rt.syncher.report("context", { online: true }, { reporter: me });
    const name = `lobby-${process.pid}`;
    await rt.registry.registerObject(obj.url, { name, schema: "hyperty-catalogue://catalogue.example.com/.well-known/dataschema/Context", reporter: me, resources: ["presence"], dataSchemes: ["context"] });
    const byName = await other.registry.lookup(name);
    assert.deepEqual(Object.keys(byName), [obj.url]);
    assert.equal(byName[obj.url].reporter, me);
    assert.equal(byName[obj.url].name, name);
    const found = await other.registry.discover({ resources: ["presence"], reporter: me });
    assert.deepEqual(Object.keys(found), [obj.url]);
    // a reporter this session does not hold is refused
    const stranger = await other.allocate();
    await assert.rejects(rt.registry.registerObject(obj.url, { name, schema: "s", reporter: stranger }), (e) => e.code === 403);
  } finally {
    await rt.close();
    await other.close();
  }
});

test("onInvitation: an invitation is acknowledged and names the object, its reporter and who invited", async () => {
  const a = await login();
  const alice = await connect({ url: WS, token: a.token });
  const bob = await runtime();
  try {
    const [aliceH, bobH] = [await alice.allocate(), await bob.allocate()];
    const got = new Promise((resolve) => bob.syncher.onInvitation(bobH, resolve));
    // other messages to the same address are left to its other listeners
    const chat = new Promise((resolve) => bob.listen(bobH, (m) => m.type === "update" && resolve(m.body.value)));
    alice.send({ type: "update", from: aliceH, to: bobH, body: { value: "hello" } });
    assert.equal(await chat, "hello");

    const conn = await alice.syncher.report("connection", { status: "ringing" }, { reporter: aliceH, name: "call", invite: [bobH] });
    const inv = await got;
    assert.equal(inv.object, conn.url);
    assert.equal(inv.scheme, "connection");
    assert.equal(inv.name, "call");
    assert.equal(inv.reporter, aliceH);
    assert.equal(inv.identity, a.user, "the node asserts who invited");
    const answered = await until(conn, (e) => e.type === "invitation");
    assert.equal(answered.code, 200);
    const view = await bob.syncher.observe(inv.object, { observer: bobH });
    assert.equal(view.data.status, "ringing");
  } finally {
    await alice.close();
    await bob.close();
  }
});
