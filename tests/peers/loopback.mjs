// Preload for HTTP peers (`node --import ./loopback.mjs ...`): makes every server that is told
// to listen on a bare port listen on 127.0.0.1 only, and prints the port it really got, so that
// a test can start a peer with PORT=0 and read the port instead of guessing a free one.
//
// Prints one line to stderr per listening server:
//   mcpd-peer-listening 127.0.0.1:<port>
import net from "node:net";

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const first = args[0];
  const bare =
    typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first));
  if (bare && typeof args[1] !== "string") {
    args.splice(1, 0, "127.0.0.1");
  }
  this.once("listening", () => {
    const a = this.address();
    if (a && typeof a === "object") {
      process.stderr.write(`mcpd-peer-listening ${a.address}:${a.port}\n`);
    }
  });
  return listen.apply(this, args);
};
