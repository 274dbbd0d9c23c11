#!/usr/bin/env node
// mcpd as the client under test of the conformance suite's client scenarios.
//
//   MCPD_BIN_DIR=target/debug node conformance_client.mjs <server-url>
//
// (the suite appends <server-url> and sets MCP_CONFORMANCE_SCENARIO). Starts a private mcpd
// (temp XDG tree) whose one upstream, `up`, is the suite's server at <server-url> (streamable
// HTTP), then drives it the way a user's client would: the TypeScript SDK v2 client in `auto`
// mode through mcp-shim lists the tools and calls each, with arguments made from its input
// schema (numbers 1, strings "x", booleans true). What the suite checks is what mcpd sent
// upstream. Exits 0 when the calls were made, 1 otherwise; mcpd is stopped either way.

import { spawn } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import { Client } from "@modelcontextprotocol/client";
import { StdioClientTransport } from "@modelcontextprotocol/client/stdio";

const url = process.argv[process.argv.length - 1];
const bins = process.env.MCPD_BIN_DIR;
if (!url?.startsWith("http") || !bins) {
  process.stderr.write("conformance_client: usage: MCPD_BIN_DIR=DIR conformance_client.mjs URL\n");
  process.exit(2);
}

const root = mkdtempSync("/tmp/cc-");
const dirs = {};
for (const [key, sub] of [
  ["XDG_RUNTIME_DIR", "run"],
  ["XDG_CONFIG_HOME", "cfg"],
  ["XDG_STATE_HOME", "state"],
  ["XDG_CACHE_HOME", "cache"],
  ["HOME", "home"],
]) {
  dirs[key] = join(root, sub);
  mkdirSync(dirs[key], { recursive: true, mode: 0o700 });
}
chmodSync(dirs.XDG_RUNTIME_DIR, 0o700);
mkdirSync(join(dirs.XDG_CONFIG_HOME, "mcpd"), { recursive: true });
const config = join(dirs.XDG_CONFIG_HOME, "mcpd", "config.json");
// The suite's 2026-07-28 servers are modern: pinned, so the run does not hang on a probe.
writeFileSync(
  config,
  JSON.stringify({ mcpServers: { up: { type: "http", url, protocol: "2026-07-28" } } }),
  { mode: 0o600 },
);

const env = { ...dirs, PATH: process.env.PATH ?? "", MCPD_NO_AUTOSTART: "1" };
const daemon = spawn(join(bins, "mcpd"), [], { env, stdio: ["ignore", "ignore", "inherit"] });

function argumentsFor(schema) {
  const args = {};
  for (const [name, prop] of Object.entries(schema?.properties ?? {})) {
    const type = Array.isArray(prop?.type) ? prop.type[0] : prop?.type;
    args[name] =
      type === "number" || type === "integer"
        ? 1
        : type === "boolean"
          ? true
          : type === "object"
            ? {}
            : type === "array"
              ? []
              : "x";
  }
  return args;
}

async function connect() {
  const deadline = Date.now() + 15000;
  for (;;) {
    const client = new Client(
      { name: "mcpd-conformance-client", version: "1.0.0" },
      { capabilities: {}, versionNegotiation: { mode: "auto" } },
    );
    const transport = new StdioClientTransport({
      command: join(bins, "mcp-shim"),
      args: [],
      env,
      stderr: "ignore",
    });
    try {
      await client.connect(transport);
      return client;
    } catch (e) {
      await client.close().catch(() => {});
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

let code = 0;
try {
  const client = await connect();
  // The upstream may still be starting (probing its era): wait for its tools, a while.
  let tools = [];
  const until = Date.now() + 10000;
  while (tools.length === 0 && Date.now() < until) {
    ({ tools } = await client.listTools());
    if (tools.length === 0) await new Promise((r) => setTimeout(r, 200));
  }
  for (const tool of tools) {
    try {
      await client.callTool({ name: tool.name, arguments: argumentsFor(tool.inputSchema) });
    } catch (e) {
      process.stderr.write(`conformance_client: ${tool.name}: ${e?.message ?? e}\n`);
    }
  }
  await client.close();
} catch (e) {
  process.stderr.write(`conformance_client: ${e?.stack ?? e}\n`);
  code = 1;
}
daemon.kill("SIGTERM");
await new Promise((r) => daemon.once("exit", r));
rmSync(root, { recursive: true, force: true });
process.exit(code);
