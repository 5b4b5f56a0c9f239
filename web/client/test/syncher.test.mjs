// The Syncher across languages: a JavaScript observer of a Rust reporter and a
// Rust observer of a JavaScript reporter, with children, order and gap recovery;
// JavaScript reporter and observers among themselves.
import { test } from "node:test";
import assert from "node:assert/strict";
import { runtime, drive, until } from "./helpers.mjs";

test("a JavaScript observer of a Rust reporter: every change in order, children", async () => {
  const rt = await runtime();
  try {
    const me = await rt.allocate();
    const { url } = await drive(rt, me, "report", { data: { topic: "start", messages: [] } });
    const obs = await rt.syncher.observe(url, { observer: me });
    assert.deepEqual(obs.data, { topic: "start", messages: [] });
    assert.equal(obs.version, 0);
    const versions = [];
    obs.onChange((e) => e.type === "change" && versions.push(e.change.version));
    const done = until(obs, (e) => e.version === 12 || (e.change && e.change.version === 12));
    const r = await drive(rt, me, "change", { n: 10 });
    assert.equal(r.version, 12);
    await done;
    assert.deepEqual(versions, Array.from({ length: 12 }, (_, i) => i + 1), "each version once, in order");
    assert.deepEqual(obs.data, r.data);
    assert.equal(obs.children[r.child].data.text, "rust child");

    // a child from the JavaScript side, sequenced by the Rust reporter
    const created = until(obs, (e) => e.type === "change" && e.change.type === "create" && e.change.source === me);
    const id = await obs.addChild({ text: "js child" });
    assert.equal((await created).change.resource, id);
    assert.equal(obs.children[id].data.text, "js child");
    assert.equal(obs.children[id].reporter, me);
  } finally {
    await rt.close();
  }
});

test("a Rust observer of a JavaScript reporter", async () => {
  const rt = await runtime();
  try {
    const me = await rt.allocate();
    const rep = await rt.syncher.report("comm", { messages: [] }, { name: "js chat" });
    const snap = await drive(rt, me, "observe", { url: rep.url });
    assert.equal(snap.url, rep.url);
    assert.equal(snap.reporter, rep.reporter);
    assert.equal(rep.observers.length, 1);
    for (let i = 0; i < 5; i++) rep.push("messages", { n: i });
    rep.set("topic", "from js");
    rep.unset("topic");
    rep.set("place.city", "Lisbon");
    const child = rep.addChild({ text: "hello" });
    const v = rep.updateChild(child, "text", "hello rust");
    const seen = await drive(rt, me, "await", { version: v });
    assert.equal(seen.version, v);
    assert.deepEqual(seen.data, rep.data);
    assert.deepEqual(seen.childrenObjects[child].data, { text: "hello rust" });
  } finally {
    await rt.close();
  }
});

test("JavaScript reporter and observer: rejection, gap recovery, delete", async () => {
  const [a, b] = [await runtime(), await runtime()];
  try {
    let banned = "";
    const rep = await a.syncher.report("context", { values: [] }, { onSubscription: (r) => (r.observer === banned ? "not you" : true) });
    banned = await b.allocate();
    await assert.rejects(b.syncher.observe(rep.url, { observer: banned }), (e) => e.code === 403 && e.description === "not you");
    const obs = await b.syncher.observe(rep.url);
    rep.push("values", 1);
    await until(obs, (e) => e.type === "change" && e.change.version === 1);

    // a lost change: the observer fetches what it missed from the reporter
    const lost = rep._links.splice(0);
    rep.push("values", 2);
    rep._links.push(...lost);
    rep.push("values", 3);
    await until(obs, (e) => e.type === "change" && e.change.version === 3);
    assert.deepEqual(obs.data, { values: [1, 2, 3] });
    assert.ok(obs.fetches >= 1, "the gap was fetched");

    const deleted = until(obs, (e) => e.type === "deleted");
    await rep.delete();
    await deleted;
    assert.ok(obs.deleted);
  } finally {
    await a.close();
    await b.close();
  }
});
