// A plain socket.io 4 relay: the least a relay must do to route a reTHINK message
// by its address. The peer of `cargo bench --bench transports -- --transports`.
//
// Every socket joins the room named by its `addr` query parameter; a `message`
// event carries one reTHINK message as JSON text, which is parsed and emitted, as
// the same text, to the room named by its `to`. No authentication, no ownership
// check, no policy: whoever connects may claim any address and send to any other.
//
//   node relay.mjs [port]     (default 0: any free port)
//
// Prints `listening on ws://127.0.0.1:<port>` once it accepts connections.
import { createServer } from "node:http";
import { Server } from "socket.io";

const port = Number(process.argv[2] ?? 0);
const http = createServer();
const io = new Server(http, { transports: ["websocket"], serveClient: false });

io.on("connection", (socket) => {
  const addr = socket.handshake.query.addr;
  if (typeof addr === "string" && addr !== "") socket.join(addr);
  socket.on("message", (text) => {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (msg && typeof msg.to === "string") io.to(msg.to).emit("message", text);
  });
});

http.listen(port, "127.0.0.1", () => {
  console.log(`listening on ws://127.0.0.1:${http.address().port}`);
});
