#!/usr/bin/env node
// An HTTP front for a stdio MCP command, for the conformance suite's 2026-07-28 server
// scenarios (which speak streamable HTTP) against mcpd, whose clients attach over stdio.
//
//   node http_shim.mjs -- target/debug/mcp-shim [ARGS...]
//
// Starts the command once and serves POST /mcp on 127.0.0.1 (port from $PORT, default 0 = any;
// prints "mcpd-peer-listening 127.0.0.1:<port>" on stderr). Each POSTed request goes to the
// command with an id of the adapter's own (HTTP clients reuse ids), and its answer comes back
// on a text/event-stream response, preceded by the notifications that belong to it: progress by
// its token, a subscriptions/listen stream's by its subscription id, anything else that arrives
// while it is the newest request in flight. Notifications
// from the client get 202. A request with an Origin that is not loopback gets 403 (DNS rebinding
// protection, as the transport requires). This is test plumbing: it parses and re-serializes
// messages, which mcpd itself never does.

import { spawn } from "node:child_process";
import http from "node:http";
import { createInterface } from "node:readline";

const argv = process.argv.slice(2);
const command = argv[0] === "--" ? argv.slice(1) : argv;
if (command.length === 0) {
  process.stderr.write("http_shim: usage: http_shim.mjs -- COMMAND [ARGS...]\n");
  process.exit(2);
}

const child = spawn(command[0], command.slice(1), { stdio: ["pipe", "pipe", "inherit"] });
child.on("exit", (code) => {
  process.stderr.write(`http_shim: the command exited (${code})\n`);
  process.exit(1);
});

let nextId = 1;
/** adapter id -> { res, clientId, token } in arrival order. */
const pending = new Map();

function event(res, msg) {
  res.write(`event: message\ndata: ${JSON.stringify(msg)}\n\n`);
}

function newest() {
  let last;
  for (const p of pending.values()) last = p;
  return last;
}

createInterface({ input: child.stdout }).on("line", (line) => {
  let msg;
  try {
    msg = JSON.parse(line);
  } catch {
    return;
  }
  if (msg.method === undefined) {
    const p = pending.get(msg.id);
    if (!p) return;
    pending.delete(msg.id);
    msg.id = p.clientId;
    event(p.res, msg);
    p.res.end();
    return;
  }
  if (msg.id !== undefined) return; // server-to-client requests: modern clients take none
  const token = msg.params?.progressToken;
  const meta = msg.params?._meta;
  const subscription = meta?.["io.modelcontextprotocol/subscriptionId"];
  let target;
  if (subscription !== undefined) {
    // A subscriptions/listen stream's notification: to that listen, with the client's id.
    target = pending.get(subscription);
    if (!target) return;
    meta["io.modelcontextprotocol/subscriptionId"] = target.clientId;
  } else if (token !== undefined) {
    for (const p of pending.values()) if (p.token === token) target = p;
  }
  target ??= newest();
  if (target) event(target.res, msg);
});

function loopback(origin) {
  try {
    const host = new URL(origin).hostname;
    return host === "localhost" || host === "127.0.0.1" || host === "[::1]" || host === "::1";
  } catch {
    return false;
  }
}

const server = http.createServer((req, res) => {
  if (req.url?.split("?")[0] !== "/mcp") {
    res.writeHead(404).end();
    return;
  }
  if (req.headers.origin !== undefined && !loopback(req.headers.origin)) {
    res.writeHead(403, { "content-type": "application/json" });
    res.end(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32000, message: "Forbidden origin" } }));
    return;
  }
  if (req.method !== "POST") {
    res.writeHead(405, { allow: "POST" }).end();
    return;
  }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    let msg;
    try {
      msg = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      res.writeHead(400, { "content-type": "application/json" });
      res.end(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32700, message: "Parse error" } }));
      return;
    }
    if (msg.id === undefined || msg.method === undefined) {
      if (msg.method === "notifications/cancelled") {
        for (const [id, p] of pending) {
          if (p.clientId === msg.params?.requestId) msg.params.requestId = id;
        }
      }
      child.stdin.write(JSON.stringify(msg) + "\n");
      res.writeHead(202).end();
      return;
    }
    const id = nextId++;
    pending.set(id, { res, clientId: msg.id, token: msg.params?._meta?.progressToken });
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    res.on("close", () => pending.delete(id));
    msg.id = id;
    child.stdin.write(JSON.stringify(msg) + "\n");
  });
});

server.listen(Number(process.env.PORT ?? 0), "127.0.0.1", () => {
  process.stderr.write(`mcpd-peer-listening 127.0.0.1:${server.address().port}\n`);
});
