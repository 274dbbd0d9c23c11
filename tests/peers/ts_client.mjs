#!/usr/bin/env node
// A real MCP client (the official TypeScript SDK) that talks to mcpd through mcp-shim.
//
// The twin of py_client.py: same command line, same steps, same output, so a test can run the
// same script through both SDKs. See py_client.py's docstring for the list of steps; in short:
//
//   node ts_client.mjs --shim target/debug/mcp-shim --socket /tmp/x/mcpd.sock -- \
//       '[{"op":"list_tools"},{"op":"call_tool","name":"everything__echo","arguments":{"message":"hi"}}]'
//
// prints {"op":"initialize",...} and then one JSON line per step on stdout. Ops: list_tools,
// call_tool (with "progress": true it asks for progress and lists what came), list_resources,
// list_resource_templates, read_resource, subscribe, unsubscribe, list_prompts, get_prompt,
// complete, set_level, roots_changed, ping, sleep, wait_stdin (its line is printed before it
// blocks on this process's stdin), wait_notification, received. Each step may carry "timeout" (seconds, default 30) and
// "expect_error": true. --callbacks JSON installs sampling/elicitation/roots handlers and
// declares only those capabilities.
//
// To add an op: add a function to `ops` below.
//
// Exit status: 0 when every step succeeded, 1 when one failed (reason on stderr, prefixed
// "ts_client:"), 2 for bad usage.

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
  McpError,
} from "@modelcontextprotocol/sdk/types.js";

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


/** What steps share: the client and what the server sent us. */
const ctx = Object.assign(notificationLog(), { client: null, requests: [] });


const ops = {
  ...commonOps(ctx),
  async list_tools() {
    const tools = await allPages((p) => ctx.client.listTools(p), "tools");
    return { tools: tools.map((t) => t.name), raw: tools };
  },
  async call_tool(step) {
    const progress = [];
    const options = step.progress
      ? { onprogress: (p) => progress.push({ progress: p.progress, total: p.total ?? null }) }
      : undefined;
    const r = await ctx.client.callTool(
      { name: step.name, arguments: step.arguments ?? {} },
      undefined,
      options,
    );
    const out = {
      content: r.content,
      isError: Boolean(r.isError),
      structuredContent: r.structuredContent ?? null,
    };
    if (step.progress) out.progress = progress;
    return out;
  },
  async subscribe(step) {
    await ctx.client.subscribeResource({ uri: step.uri });
    return {};
  },
  async unsubscribe(step) {
    await ctx.client.unsubscribeResource({ uri: step.uri });
    return {};
  },
  async complete(step) {
    const params = { ref: step.ref, argument: step.argument };
    if (step.context) params.context = { arguments: step.context };
    const r = await ctx.client.complete(params);
    return { values: r.completion.values };
  },
  async set_level(step) {
    await ctx.client.setLoggingLevel(step.level);
    return {};
  },
  async roots_changed() {
    await ctx.client.sendRootsListChanged();
    return {};
  },
  async list_resources() {
    const items = await allPages((p) => ctx.client.listResources(p), "resources");
    return { resources: items.map((r) => r.uri), raw: items };
  },
  async list_resource_templates() {
    const items = await allPages(
      (p) => ctx.client.listResourceTemplates(p),
      "resourceTemplates",
    );
    return { templates: items.map((t) => t.uriTemplate), raw: items };
  },
  async read_resource(step) {
    const r = await ctx.client.readResource({ uri: step.uri });
    return { contents: r.contents };
  },
  async list_prompts() {
    const items = await allPages((p) => ctx.client.listPrompts(p), "prompts");
    return { prompts: items.map((p) => p.name), raw: items };
  },
  async get_prompt(step) {
    const r = await ctx.client.getPrompt({ name: step.name, arguments: step.arguments });
    return { messages: r.messages };
  },
  async ping() {
    await ctx.client.ping();
    return {};
  },
  async received() {
    return { notifications: ctx.notifications, requests: ctx.requests };
  },
};


/** Installs the handlers named in `spec`; the client must declare them (capabilitiesFor). */
function installCallbacks(client, spec) {
  if ("sampling" in spec) {
    const a = spec.sampling ?? {};
    client.setRequestHandler(CreateMessageRequestSchema, async (req) => {
      ctx.requests.push({ method: req.method, params: req.params });
      return {
        role: "assistant",
        content: { type: "text", text: a.text ?? "sampled" },
        model: a.model ?? "ts-client-model",
        stopReason: a.stopReason ?? "endTurn",
      };
    });
  }
  if ("elicitation" in spec) {
    const a = spec.elicitation ?? {};
    client.setRequestHandler(ElicitRequestSchema, async (req) => {
      ctx.requests.push({ method: req.method, params: req.params });
      return a.content === undefined
        ? { action: a.action ?? "accept" }
        : { action: a.action ?? "accept", content: a.content };
    });
  }
  if ("roots" in spec) {
    const roots = spec.roots ?? [];
    client.setRequestHandler(ListRootsRequestSchema, async (req) => {
      ctx.requests.push({ method: req.method });
      return { roots };
    });
  }
}

function capabilitiesFor(spec) {
  const c = {};
  if ("sampling" in spec) c.sampling = {};
  if ("elicitation" in spec) c.elicitation = { form: {}, url: {} };
  if ("roots" in spec) c.roots = { listChanged: true };
  return c;
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
        "shim-arg": { type: "string", multiple: true, default: [] },
        env: { type: "string", multiple: true, default: [] },
        "inherit-env": { type: "boolean", default: false },
        callbacks: { type: "string" },
        "client-name": { type: "string", default: "ts-client" },
        "init-timeout": { type: "string", default: String(DEFAULT_STEP_TIMEOUT) },
        "steps-file": { type: "string" },
      },
    }));
    if (!values.shim) throw new Error("--shim is required");
  } catch (e) {
    process.stderr.write(`ts_client: ${e.message}\n`);
    return 2;
  }

  let steps;
  let callbacks;
  try {
    steps = JSON.parse(
      values["steps-file"] ? readFileSync(values["steps-file"], "utf8") : (positionals[0] ?? "[]"),
    );
    if (!Array.isArray(steps) || !steps.every((s) => s && typeof s === "object")) {
      throw new Error("steps must be a JSON list of objects");
    }
    callbacks = values.callbacks ? JSON.parse(values.callbacks) : {};
  } catch (e) {
    process.stderr.write(`ts_client: bad steps: ${e.message}\n`);
    return 2;
  }

  // SDK stdio transports start the server with a scrubbed environment: pass what the shim
  // needs explicitly.
  const env = values["inherit-env"] ? { ...process.env } : {};
  for (const key of ["MCPD_SOCKET", "RUST_LOG", "RUST_BACKTRACE", "XDG_RUNTIME_DIR"]) {
    if (process.env[key] !== undefined) env[key] = process.env[key];
  }
  if (values.socket) env.MCPD_SOCKET = values.socket;
  for (const kv of values.env) {
    const i = kv.indexOf("=");
    env[i < 0 ? kv : kv.slice(0, i)] = i < 0 ? "" : kv.slice(i + 1);
  }
  const args = [...values["shim-arg"]];
  if (values.profile) args.push("--profile", values.profile);

  const transport = new StdioClientTransport({
    command: values.shim,
    args,
    env,
    stderr: "inherit",
  });
  // The client tells HTTP transports the negotiated version through this hook; stdio has none,
  // so borrowing it is how we learn the version.
  let protocolVersion = null;
  transport.setProtocolVersion = (v) => {
    protocolVersion = v;
  };
  const client = new Client(
    { name: values["client-name"], version: "1.0.0" },
    { capabilities: capabilitiesFor(callbacks) },
  );
  installCallbacks(client, callbacks);
  client.fallbackNotificationHandler = async (n) => ctx.record(n);
  ctx.client = client;

  try {
    try {
      await withTimeout(client.connect(transport), Number(values["init-timeout"]), "initialize");
    } catch (e) {
      if (e instanceof StepFailed) throw e;
      throw new StepFailed(`initialize: ${e?.message ?? e}`);
    }
    emit({
      op: "initialize",
      protocolVersion,
      serverInfo: client.getServerVersion(),
      capabilities: client.getServerCapabilities(),
    });
    for (const [i, step] of steps.entries()) {
      await runStep(ops, step, i, (e) => e instanceof McpError);
    }
  } catch (e) {
    process.stderr.write(`ts_client: ${e instanceof StepFailed ? e.message : (e?.stack ?? e)}\n`);
    await client.close().catch(() => {});
    return 1;
  }
  await client.close();
  return 0;
}

const code = await main();
// stdin may still be open (wait_stdin's reader): exit explicitly once stdout is flushed.
process.stdout.write("", () => process.exit(code));
