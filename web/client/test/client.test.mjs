// The session side of the client: open with a token, allocation, requests and
// their timeouts, listeners, /sm fan-out, reconnect with re-open, bad input.
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect, HypertyError } from "../hyperty.js";
import { WS, DOMAIN, DRIVER, runtime, next, drive } from "./helpers.mjs";

test("connects with an ID token and allocates hyperty addresses", async () => {
  const rt = await runtime();
  try {
    assert.equal(rt.status, "live");
    assert.equal(rt.domain, DOMAIN);
    assert.match(rt.runtimeUrl, new RegExp(`^runtime://${DOMAIN.replace(".", "\\.")}/`));
    assert.ok(rt.runtimeToken, "the node hands out a runtime token");
    const a = await rt.allocate();
    assert.match(a, new RegExp(`^hyperty://${DOMAIN.replace(".", "\\.")}/`));
    const more = await rt.allocateMany({ number: 3 });
    assert.equal(new Set([a, ...more]).size, 4);
  } finally {
    await rt.close();
  }
});

test("post and response between two runtimes, numeric and string ids, timeout", async () => {
  const [alice, bob] = [await runtime(), await runtime()];
  try {
    const [a, b] = [await alice.allocate(), await bob.allocate()];
    bob.listen(b, (m) => bob.reply(m, 200, { echo: m.body.value, id: m.id }));
    const r1 = await alice.post({ type: "read", from: a, to: b, body: { value: "one" } });
    assert.equal(r1.body.code, 200);
    assert.deepEqual(r1.body.value, { echo: "one", id: r1.id });
    assert.equal(typeof r1.id, "number");
    const r2 = await alice.post({ id: "abc-7", type: "read", from: a, to: b, body: { value: "two" } });
    assert.equal(r2.id, "abc-7");
    assert.equal(r2.body.value.echo, "two");

    // nobody answers: the request fails with 408 after its timeout
    const silent = await bob.allocate();
    bob.listen(silent, () => {});
    await assert.rejects(
      alice.post({ type: "read", from: a, to: silent }, { timeout: 300 }),
      (e) => e instanceof HypertyError && e.code === 408 && /within 300 ms/.test(e.message),
    );
    // an error response rejects with its code and description
    const picky = await bob.allocate();
    bob.listen(picky, (m) => bob.reply(m, 403, undefined, { description: "not you" }));
    await assert.rejects(alice.post({ type: "read", from: a, to: picky }), (e) => e.code === 403 && e.description === "not you");
  } finally {
    await alice.close();
    await bob.close();
  }
});

test("subscribe at /sm: every subscriber hears a publication, the sender too", async () => {
  const rts = [await runtime(), await runtime(), await runtime()];
  try {
    const topic = `hyperty://${DOMAIN}/topic-${process.pid}`;
    for (const rt of rts) await rt.subscribe([topic]);
    const heard = rts.map((rt) => next(rt, topic, (m) => m.body.value));
    const me = await rts[0].allocate();
    rts[0].send({ type: "update", from: me, to: topic, body: { value: "news" } });
    assert.deepEqual(await Promise.all(heard), ["news", "news", "news"]);
    await rts[2].unsubscribe([topic]);
    const again = [next(rts[0], topic, (m) => m.body.value), next(rts[1], topic, (m) => m.body.value)];
    rts[0].send({ type: "update", from: me, to: topic, body: { value: "more" } });
    assert.deepEqual(await Promise.all(again), ["more", "more"]);
  } finally {
    for (const rt of rts) await rt.close();
  }
});

test("a dropped socket: reconnect, re-open, and what the node buffered arrives", async () => {
  const rt = await runtime({ backoff: { min: 1500, max: 1500 } });
  try {
    const me = await rt.allocate();
    const token = rt.runtimeToken;
    const statuses = [];
    rt.on("status", (s) => statuses.push(s));
    const got = [];
    const all = new Promise((resolve) =>
      rt.listen(me, (m) => {
        got.push(m.body.value.n);
        if (got.length === 3) resolve();
      }),
    );
    // the driver kicks our socket, then sends three updates while we are away;
    // its answer is buffered too
    const answered = drive(rt, me, "drop", { runtime: rt.runtimeUrl, to: me, n: 3 });
    await answered;
    await all;
    assert.deepEqual(got, [0, 1, 2], "in order, none lost");
    assert.ok(statuses.includes("disconnected") && statuses.includes("reconnected"), statuses.join());
    assert.equal(rt.runtimeToken, token, "the same session was resumed");
    // the session still owns its address
    const again = await rt.allocate();
    const echo = next(rt, again, (m) => m.body.value);
    rt.send({ type: "update", from: me, to: again, body: { value: "still here" } });
    assert.equal(await echo, "still here");
  } finally {
    await rt.close();
  }
});

test("a bad token: 401 and the socket closes", async () => {
  await assert.rejects(
    connect({ url: WS, token: "not-a-token", domain: DOMAIN }),
    (e) => e instanceof HypertyError && e.code === 401,
  );
});

test("a forged sender: 403 surfaced, the session stays up", async () => {
  const rt = await runtime();
  try {
    const me = await rt.allocate();
    await assert.rejects(
      rt.post({ type: "read", from: DRIVER, to: me }),
      (e) => e instanceof HypertyError && e.code === 403 && e.description.length > 0,
    );
    const errors = [];
    rt.on("error", (e) => errors.push(e.code));
    rt.send({ type: "update", from: `hyperty://${DOMAIN}/not-mine`, to: me, body: {} });
    await assert.rejects(rt.post({ type: "read", from: `hyperty://${DOMAIN}/not-mine-either`, to: me }), (e) => e.code === 403);
    assert.ok(errors.includes(403), "a refused notification is reported as an error event");
    assert.equal(rt.status, "live");
    assert.ok(await rt.allocate());
  } finally {
    await rt.close();
  }
});
