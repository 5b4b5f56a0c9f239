// Speaks to the node the way the reTHINK NodejsProtoStub does, with the real
// socket.io-client 1.x: `io.connect(url)`, `socket.send(JSON.stringify(msg))`,
// messages in on 'message'. Driven by tests/socketio.rs, which runs a peer runtime
// (PEER) on the node's raw WebSocket that answers every execute it gets.
//
// env: NODE_URL (http://host:port), RUNTIME, PEER, TRANSPORTS (comma separated;
// unset: socket.io-client's default, polling then the websocket upgrade).
// Prints one JSON line with what it saw; exits non-zero on any failure.
'use strict';
const io = require('socket.io-client');

const { NODE_URL, RUNTIME, PEER, TRANSPORTS } = process.env;
const fail = (why) => {
  console.error('stub failed: ' + why);
  process.exit(1);
};
const deadline = setTimeout(() => fail('timed out'), 30000);

const opts = { forceNew: true, reconnection: false };
if (TRANSPORTS) opts.transports = TRANSPORTS.split(',');
const socket = io.connect(NODE_URL, opts);
const waiting = new Map();
const seen = { transports: [], acks: [], delivered: [] };

socket.on('message', (m) => {
  if (typeof m === 'string') m = JSON.parse(m);
  const w = m.type === 'response' && waiting.get(m.id);
  if (w) {
    waiting.delete(m.id);
    w(m);
  } else {
    seen.delivered.push(m);
  }
});
socket.on('error', (e) => fail('socket error ' + JSON.stringify(e)));
socket.on('connect_error', (e) => fail('connect error ' + e));

const request = (msg) =>
  new Promise((resolve) => {
    waiting.set(msg.id, resolve);
    socket.send(JSON.stringify(msg));
  });
const acked = (msg) =>
  new Promise((resolve) => {
    socket.emit('message', JSON.stringify(msg), (ack) => {
      seen.acks.push(ack);
      resolve(ack);
    });
  });
const transport = () => socket.io.engine.transport.name;
const upgraded = () =>
  new Promise((resolve) => {
    if (transport() === 'websocket') return resolve();
    socket.io.engine.once('upgrade', () => resolve());
  });

socket.on('connect', async () => {
  try {
    seen.transports.push(transport());
    const opened = await request({ id: 1, type: 'open', from: RUNTIME, to: 'mn:/session' });
    if (opened.body.code !== 200) fail('open: ' + JSON.stringify(opened));
    if (!TRANSPORTS) await upgraded();
    seen.transports.push(transport());
    // a request to the peer and its answer, with a non-ASCII body both ways
    const answer = request({ id: 2, type: 'execute', from: RUNTIME, to: PEER, body: { value: 'ping é ✓' } });
    const ack = await acked({ id: 3, type: 'execute', from: RUNTIME, to: PEER, body: { value: 'acked' } });
    if (ack.code !== 200) fail('ack of a delivered frame: ' + JSON.stringify(ack));
    const r = await answer;
    if (r.body.code !== 200 || r.body.value !== 'pong é ✓') fail('answer: ' + JSON.stringify(r));
    // a frame nobody can take is acknowledged with its reTHINK code
    const nack = await acked({ id: 4, type: 'execute', from: RUNTIME, to: RUNTIME.replace(/[^/]*$/, 'nobody') });
    if (nack.code === 200) fail('ack of an unroutable frame: ' + JSON.stringify(nack));
    const closed = await request({ id: 5, type: 'close', from: RUNTIME, to: 'mn:/session' });
    if (closed.body.code !== 200) fail('close: ' + JSON.stringify(closed));
  } catch (e) {
    fail(e.stack || String(e));
  }
});
socket.on('disconnect', (reason) => {
  clearTimeout(deadline);
  seen.disconnect = reason;
  console.log(JSON.stringify(seen));
  process.exit(0);
});
