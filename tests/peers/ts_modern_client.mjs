#!/usr/bin/env node
// The TypeScript SDK v2 client (`@modelcontextprotocol/client`) through mcp-shim, in a
// negotiated era: `--mode auto` (probe with server/discover on a throw-away second copy of the
// command, fall back to initialize on a legacy server) or `--mode 2026-07-28` (pinned).
//
//   node ts_modern_client.mjs --shim target/debug/mcp-shim --socket /tmp/x/mcpd.sock \
//       --mode auto -- '[{"op":"list_tools"},{"op":"call_tool","name":"everything__echo","arguments":{"message":"hi"}}]'
//
// prints {"op":"connect","era":...,"protocolVersion":...,"serverInfo":...,"capabilities":...,
// "connectMs":...} (connectMs: how long connect() took, probe included)
// and then one JSON line per step, like ts_client.mjs. Ops: list_tools, call_tool ("log_level"
// puts io.modelcontextprotocol/logLevel in the call's _meta, "progress": true asks for progress;
// both list what came for the call), get_prompt ("name", "arguments"), read_resource, listen (opens subscriptions/listen with
// "filter"; prints the honored filter), close_listen, wait_notification ("method", optionally
// "uri"), received, wait_stdin, request (any method with "params", raw result).
//
// Exit status: 0 when every step succeeded, 1 when one failed (reason on stderr, prefixed
// "ts_modern_client:"), 2 for bad usage.

import { parseArgs } from "node:util";

import { Client, ProtocolError } from "@modelcontextprotocol/client";
import { StdioClientTransport } from "@modelcontextprotocol/client/stdio";

import {
  DEFAULT_STEP_TIMEOUT,
  StepFailed,
  allPages,
  commonOps,
  emit,
  notificationLog,
  runStep,
  withTimeout,
} from "./ts_steps.mjs";


/** What steps share: the client, an open listen, and what the server sent us. */
const ctx = Object.assign(notificationLog(), { client: null, subscription: null });

const NOTIFICATIONS = [
  "notifications/tools/list_changed",
  "notifications/prompts/list_changed",
  "notifications/resources/list_changed",
  "notifications/resources/updated",
  "notifications/message",
];


const ops = {
  ...commonOps(ctx),
  async list_tools() {
    const tools = await allPages((p) => ctx.client.listTools(p), "tools");
    return { tools: tools.map((t) => t.name) };
  },
  async call_tool(step) {
    const progress = [];
    const params = { name: step.name, arguments: step.arguments ?? {} };
    if (step.log_level) params._meta = { "io.modelcontextprotocol/logLevel": step.log_level };
    const options = step.progress
      ? { onprogress: (p) => progress.push({ progress: p.progress, total: p.total ?? null }) }
      : {};
    const before = ctx.notifications.length;
    const r = await ctx.client.callTool(params, options);
    const out = {
      content: r.content,
      isError: Boolean(r.isError),
      // What arrived while the call ran (log messages in particular).
      during: ctx.notifications.slice(before),
    };
    if (step.progress) out.progress = progress;
    return out;
  },
  async get_prompt(step) {
    const r = await ctx.client.getPrompt({ name: step.name, arguments: step.arguments ?? {} });
    return { messages: r.messages };
  },
  async read_resource(step) {
    const r = await ctx.client.readResource({ uri: step.uri });
    return { contents: r.contents };
  },
  async listen(step) {
    ctx.subscription = await ctx.client.listen(step.filter ?? {});
    return { honored: ctx.subscription.honoredFilter };
  },
  async close_listen() {
    await ctx.subscription?.close();
    ctx.subscription = null;
    return {};
  },
  async request(step) {
    const result = await ctx.client.request({ method: step.method, params: step.params ?? {} });
    return { result };
  },
  async received() {
    return { notifications: ctx.notifications };
  },
};


async function main() {
  let values;
  let positionals;
  try {
    ({ values, positionals } = parseArgs({
      allowPositionals: true,
      options: {
        shim: { type: "string" },
        socket: { type: "string" },
        profile: { type: "string" },
        mode: { type: "string", default: "auto" },
        "connect-timeout": { type: "string", default: String(DEFAULT_STEP_TIMEOUT) },
      },
    }));
    if (!values.shim) throw new Error("--shim is required");
  } catch (e) {
    process.stderr.write(`ts_modern_client: ${e.message}\n`);
    return 2;
  }
  let steps;
  try {
    steps = JSON.parse(positionals[0] ?? "[]");
    if (!Array.isArray(steps)) throw new Error("steps must be a JSON list");
  } catch (e) {
    process.stderr.write(`ts_modern_client: bad steps: ${e.message}\n`);
    return 2;
  }

  // SDK stdio transports start the server with a scrubbed environment: pass what the shim (and a
  // daemon it may autostart) needs explicitly.
  const env = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (/^(MCPD_|XDG_|RUST_)/.test(key) || key === "HOME" || key === "PATH") env[key] = value;
  }
  if (values.socket) env.MCPD_SOCKET = values.socket;
  const args = values.profile ? ["--profile", values.profile] : [];
  const transport = new StdioClientTransport({ command: values.shim, args, env, stderr: "inherit" });
  const mode = values.mode === "auto" || values.mode === "legacy" ? values.mode : { pin: values.mode };
  const client = new Client(
    { name: "ts-modern-client", version: "2.4.0" },
    { capabilities: {}, versionNegotiation: { mode } },
  );
  const keep = async (n) => ctx.record({ method: n.method, params: n.params ?? null });
  for (const method of NOTIFICATIONS) {
    client.setNotificationHandler(method, keep);
  }
  client.fallbackNotificationHandler = keep;
  ctx.client = client;

  try {
    const started = performance.now();
    try {
      await withTimeout(client.connect(transport), Number(values["connect-timeout"]), "connect");
    } catch (e) {
      if (e instanceof StepFailed) throw e;
      throw new StepFailed(`connect: ${e?.message ?? e}`);
    }
    emit({
      op: "connect",
      era: client.getProtocolEra() ?? null,
      protocolVersion: client.getNegotiatedProtocolVersion() ?? null,
      serverInfo: client.getServerVersion() ?? null,
      capabilities: client.getServerCapabilities() ?? null,
      connectMs: performance.now() - started,
    });
    for (const [i, step] of steps.entries()) {
      await runStep(ops, step, i, (e) => e instanceof ProtocolError);
    }
  } catch (e) {
    process.stderr.write(
      `ts_modern_client: ${e instanceof StepFailed ? e.message : (e?.stack ?? e)}\n`,
    );
    await client.close().catch(() => {});
    return 1;
  }
  await client.close();
  return 0;
}

const code = await main();
process.stdout.write("", () => process.exit(code));
