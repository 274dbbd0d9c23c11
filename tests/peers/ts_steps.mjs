// What the TypeScript SDK client scripts share (ts_client.mjs, SDK v1, and
// ts_modern_client.mjs, SDK v2): the step loop with its timeouts and output, this process's
// stdin lines, the notifications the server sent, and the ops that need nothing of an SDK.

import { createInterface } from "node:readline";

export const DEFAULT_STEP_TIMEOUT = 30;

export class StepFailed extends Error {}

/** Prints one JSON line on stdout. */
export function emit(line) {
  process.stdout.write(JSON.stringify(line) + "\n");
}

/** Resolves with the next line (or null at EOF) of this process's stdin. */
let stdinLines = null;
export function nextStdinLine() {
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

/** The notifications the server sent, in order, and a way to wait for the next one. */
export function notificationLog() {
  return {
    notifications: [],
    waiters: [],
    record(n) {
      this.notifications.push(n);
      const w = this.waiters;
      this.waiters = [];
      for (const wake of w) wake();
    },
    changed() {
      return new Promise((r) => this.waiters.push(r));
    },
  };
}

/** Every item of a paginated list: `list(params)` answers a page with `key` and `nextCursor`. */
export async function allPages(list, key) {
  const items = [];
  let cursor;
  do {
    const page = await list(cursor === undefined ? {} : { cursor });
    items.push(...page[key]);
    cursor = page.nextCursor;
  } while (cursor);
  return items;
}

export function withTimeout(promise, seconds, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new StepFailed(`${what}: no answer within ${seconds} s`)),
      seconds * 1000,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The ops every client script has: `log` is its `notificationLog()`. */
export function commonOps(log) {
  return {
    async sleep(step) {
      await new Promise((r) => setTimeout(r, Number(step.seconds ?? 0) * 1000));
      return {};
    },
    async wait_stdin() {
      emit({ op: "wait_stdin" });
      await nextStdinLine();
      return null;
    },
    async wait_notification(step) {
      for (;;) {
        const n = log.notifications.find(
          (x) => x.method === step.method && (step.uri === undefined || x.params?.uri === step.uri),
        );
        if (n) return { notification: n };
        await log.changed();
      }
    },
  };
}

/**
 * Runs `step` (the `index`th) with its op from `ops` within its "timeout" (seconds), and prints
 * `{op, ...result}`. An error `isProtocolError` recognises is the server's answer: printed as
 * `{op, error}` when the step says "expect_error", a failure otherwise.
 */
export async function runStep(ops, step, index, isProtocolError) {
  const op = step.op;
  const handler = Object.hasOwn(ops, op) ? ops[op] : undefined;
  if (!handler) throw new StepFailed(`step ${index}: unknown op ${JSON.stringify(op)}`);
  const expectError = Boolean(step.expect_error);
  const seconds = Number(step.timeout ?? DEFAULT_STEP_TIMEOUT);
  let out;
  try {
    out = await withTimeout(handler(step), seconds, `step ${index} (${op})`);
  } catch (e) {
    if (isProtocolError(e)) {
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
    throw new StepFailed(
      `step ${index} (${op}): expected an MCP error, got a result: ${JSON.stringify(out)}`,
    );
  }
  if (out !== null) emit({ op, ...out });
}
