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

import { createInterface } from "node:readline";
import { parseArgs } from "node:util";

import { Client, ProtocolError } from "@modelcontextprotocol/client";
import { StdioClientTransport } from "@modelcontextprotocol/client/stdio";

const DEFAULT_STEP_TIMEOUT = 30;

class StepFailed extends Error {}

function emit(line) {
  process.stdout.write(JSON.stringify(line) + "\n");
}

let stdinLines = null;
function nextStdinLine() {
  if (stdinLines === null) {
    const queue = [];
    const waiters = [];
    let closed = false;
    const rl = createInterface({ input: process.stdin });
    rl.on("line", (l) => (waiters.length ? waiters.shift()(l) : queue.push(l)));
    rl.on("close", () => {
      closed = true;
      while (waiters.length) waiters.shift()(null);
    });
    stdinLines = () =>
      queue.length
        ? Promise.resolve(queue.shift())
        : closed
          ? Promise.resolve(null)
          : new Promise((r) => waiters.push(r));
  }
  return stdinLines();
}

const ctx = {
  client: null,
  subscription: null,
  notifications: [],
  waiters: [],
  record(n) {
    this.notifications.push({ method: n.method, params: n.params ?? null });
    const w = this.waiters;
    this.waiters = [];
    for (const wake of w) wake();
  },
  changed() {
    return new Promise((r) => this.waiters.push(r));
  },
};

const NOTIFICATIONS = [
  "notifications/tools/list_changed",
  "notifications/prompts/list_changed",
  "notifications/resources/list_changed",
  "notifications/resources/updated",
  "notifications/message",
];

async function allPages(list, key) {
  const items = [];
  let cursor;
  do {
    const page = await list(cursor === undefined ? {} : { cursor });
    items.push(...page[key]);
    cursor = page.nextCursor;
  } while (cursor);
  return items;
}

const ops = {
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
  async wait_stdin() {
    emit({ op: "wait_stdin" });
    await nextStdinLine();
    return null;
  },
  async wait_notification(step) {
    for (;;) {
      const n = ctx.notifications.find(
        (x) => x.method === step.method && (step.uri === undefined || x.params?.uri === step.uri),
      );
      if (n) return { notification: n };
      await ctx.changed();
    }
  },
  async received() {
    return { notifications: ctx.notifications };
  },
};

function withTimeout(promise, seconds, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new StepFailed(`${what}: no answer within ${seconds} s`)),
      seconds * 1000,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function runStep(step, index) {
  const op = step.op;
  const handler = Object.hasOwn(ops, op) ? ops[op] : undefined;
  if (!handler) throw new StepFailed(`step ${index}: unknown op ${JSON.stringify(op)}`);
  const expectError = Boolean(step.expect_error);
  const seconds = Number(step.timeout ?? DEFAULT_STEP_TIMEOUT);
  let out;
  try {
    out = await withTimeout(handler(step), seconds, `step ${index} (${op})`);
  } catch (e) {
    if (e instanceof ProtocolError) {
      if (!expectError) {
        throw new StepFailed(`step ${index} (${op}): MCP error ${e.code}: ${e.message}`);
      }
      emit({ op, error: { code: e.code, message: e.message } });
      return;
    }
    if (e instanceof StepFailed) throw e;
    throw new StepFailed(`step ${index} (${op}): ${e?.stack ?? e}`);
  }
  if (expectError) {
    throw new StepFailed(`step ${index} (${op}): expected an MCP error, got ${JSON.stringify(out)}`);
  }
  if (out !== null) emit({ op, ...out });
}

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
  for (const method of NOTIFICATIONS) {
    client.setNotificationHandler(method, async (n) => ctx.record(n));
  }
  client.fallbackNotificationHandler = async (n) => ctx.record(n);
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
      await runStep(step, i);
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
