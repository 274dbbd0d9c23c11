#!/usr/bin/env python3
"""A real MCP client (the official Python SDK) that talks to mcpd through mcp-shim.

mcpd's integration tests run this as a subprocess to prove that an unmodified SDK client works
through the shim and the daemon. It is driven by a JSON list of steps and prints one JSON line per
step on stdout, in order, so a test can read the lines as they come:

    py_client.py --shim target/debug/mcp-shim --socket /tmp/x/mcpd.sock -- \
        '[{"op":"list_tools"},{"op":"call_tool","name":"everything__echo","arguments":{"message":"hi"}}]'

The first line is always {"op":"initialize",...}: the SDK's handshake, done before any step.

Steps (every step may carry "timeout": seconds, default 30, and "expect_error": true, which
turns an MCP error into the step's line {"op":..,"error":{"code":..,"message":..}} instead of a
failure; a step that expected an error and got a result fails):

    {"op":"list_tools"}                -> {"op":"list_tools","tools":[names],"raw":[tool objects]}
    {"op":"call_tool","name":N,"arguments":{..}[,"progress":true]}
                                       -> {"op":"call_tool","content":[..],"isError":b,
                                           "structuredContent":{..}|null[,"progress":[..]]}:
                                          with "progress", the call asks for progress and the
                                          line lists the {"progress","total"} it received
    {"op":"list_resources"}            -> {"op":"list_resources","resources":[uris],"raw":[..]}
    {"op":"list_resource_templates"}   -> {"op":..,"templates":[uriTemplates],"raw":[..]}
    {"op":"read_resource","uri":U}     -> {"op":"read_resource","contents":[..]}
    {"op":"list_prompts"}              -> {"op":"list_prompts","prompts":[names],"raw":[..]}
    {"op":"get_prompt","name":N,"arguments":{..}}
                                       -> {"op":"get_prompt","messages":[..]}
    {"op":"subscribe","uri":U}         -> {"op":"subscribe"}
    {"op":"unsubscribe","uri":U}       -> {"op":"unsubscribe"}
    {"op":"complete","ref":{..},"argument":{"name":..,"value":..}[,"context":{..}]}
                                       -> {"op":"complete","values":[..]}
    {"op":"set_level","level":L}       -> {"op":"set_level"}
    {"op":"roots_changed"}             -> {"op":"roots_changed"}: sends
                                          notifications/roots/list_changed
    {"op":"ping"}                      -> {"op":"ping"}
    {"op":"sleep","seconds":x}         -> {"op":"sleep"} (after sleeping)
    {"op":"wait_stdin"}                -> {"op":"wait_stdin"} is printed BEFORE blocking; the step
                                          then blocks until a line (or EOF) arrives on this
                                          process's stdin. A test reads up to this line to know
                                          the session is open, holds it, then writes a line.
    {"op":"wait_notification","method":M}
                                       -> {"op":"wait_notification","notification":{..}}: waits
                                          for a server notification with that method (one
                                          already received counts)
    {"op":"received"}                  -> {"op":"received","notifications":[..],"requests":[..]}:
                                          what the server sent so far (notifications, and the
                                          sampling/elicitation/roots requests it made)

Callbacks are declared with --callbacks JSON, e.g.
    {"sampling":{"text":"from the client"},"elicitation":{"action":"accept","content":{..}},
     "roots":[{"uri":"file:///tmp","name":"tmp"}]}
Only the callbacks named there are installed, so only those capabilities are declared.

To add an op: write `async def op_NAME(ctx, step) -> dict` below; it is found by name.

Exit status: 0 when every step succeeded, 1 when one failed (the reason is on stderr, prefixed
"py_client:"), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from typing import Any

import anyio
import anyio.to_thread
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import McpError
from pydantic import AnyUrl

DEFAULT_STEP_TIMEOUT = 30.0


class StepFailed(Exception):
    """A step did not do what it was asked; the message says what happened."""


def dump(model: Any) -> Any:
    """A pydantic model (or list of them) as plain JSON, with the wire's field names."""
    if isinstance(model, list):
        return [dump(m) for m in model]
    if hasattr(model, "model_dump"):
        return model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return model


def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class Context:
    """What steps share: the session and what the server sent us."""

    def __init__(self) -> None:
        self.session: ClientSession | None = None
        self.notifications: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.changed = anyio.Event()

    def record_notification(self, n: dict[str, Any]) -> None:
        self.notifications.append(n)
        self.changed.set()
        self.changed = anyio.Event()

    @property
    def s(self) -> ClientSession:
        assert self.session is not None
        return self.session


# ---- steps ------------------------------------------------------------------------------------


async def op_list_tools(ctx: Context, step: dict[str, Any]) -> dict[str, Any]:
    tools: list[types.Tool] = []
    cursor: str | None = None
    while True:
        page = await ctx.s.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.nextCursor
        if not cursor:
            break
    return {"tools": [t.name for t in tools], "raw": dump(tools)}


async def op_call_tool(ctx: Context, step: dict[str, Any]) -> dict[str, Any]:
    progress: list[dict[str, Any]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append({"progress": value, "total": total})

    callback = on_progress if step.get("progress") else None
    result = await ctx.s.call_tool(
        step["name"], step.get("arguments") or {}, progress_callback=callback
    )
    out = {
        "content": dump(result.content),
        "isError": bool(result.isError),
        "structuredContent": result.structuredContent,
    }
    if callback is not None:
        out["progress"] = progress
    return out


async def op_subscribe(ctx: Context, step: dict[str, Any]) -> dict[str, Any]:
    await ctx.s.subscribe_resource(AnyUrl(step["uri"]))
    return {}


async def op_unsubscribe(ctx: Context, step: dict[str, Any]) -> dict[str, Any]:
    await ctx.s.unsubscribe_resource(AnyUrl(step["uri"]))
    return {}


async def op_complete(ctx: Context, step: dict[str, Any]) -> dict[str, Any]:
    ref = step["ref"]
    if ref.get("type") == "ref/prompt":
        reference: Any = types.PromptReference(type="ref/prompt", name=ref["name"])
    else:
        reference = types.ResourceTemplateReference(type="ref/resource", uri=ref["uri"])
    result = await ctx.s.complete(reference, step["argument"], step.get("context"))
    return {"values": result.completion.values}


async def op_set_level(ctx: Context, step: dict[str, Any]) -> dict[str, Any]:
    await ctx.s.set_logging_level(step["level"])
    return {}


async def op_roots_changed(ctx: Context, step: dict[str, Any]) -> dict[str, Any]:
    await ctx.s.send_roots_list_changed()
    return {}


async def op_list_resources(ctx: Context, step: dict[str, Any]) -> dict[str, Any]:
    items: list[types.Resource] = []
    cursor: str | None = None
    while True:
        page = await ctx.s.list_resources(cursor=cursor)
        items.extend(page.resources)
        cursor = page.nextCursor
        if not cursor:
            break
    return {"resources": [str(r.uri) for r in items], "raw": dump(items)}


async def op_list_resource_templates(ctx: Context, step: dict[str, Any]) -> dict[str, Any]:
    items: list[types.ResourceTemplate] = []
    cursor: str | None = None
    while True:
        page = await ctx.s.list_resource_templates(cursor=cursor)
        items.extend(page.resourceTemplates)
        cursor = page.nextCursor
        if not cursor:
            break
    return {"templates": [t.uriTemplate for t in items], "raw": dump(items)}


async def op_read_resource(ctx: Context, step: dict[str, Any]) -> dict[str, Any]:
    result = await ctx.s.read_resource(AnyUrl(step["uri"]))
    return {"contents": dump(result.contents)}


async def op_list_prompts(ctx: Context, step: dict[str, Any]) -> dict[str, Any]:
    items: list[types.Prompt] = []
    cursor: str | None = None
    while True:
        page = await ctx.s.list_prompts(cursor=cursor)
        items.extend(page.prompts)
        cursor = page.nextCursor
        if not cursor:
            break
    return {"prompts": [p.name for p in items], "raw": dump(items)}


async def op_get_prompt(ctx: Context, step: dict[str, Any]) -> dict[str, Any]:
    result = await ctx.s.get_prompt(step["name"], step.get("arguments"))
    return {"messages": dump(result.messages)}


async def op_ping(ctx: Context, step: dict[str, Any]) -> dict[str, Any]:
    await ctx.s.send_ping()
    return {}


async def op_sleep(ctx: Context, step: dict[str, Any]) -> dict[str, Any]:
    await anyio.sleep(float(step.get("seconds", 0)))
    return {}


async def op_wait_stdin(ctx: Context, step: dict[str, Any]) -> None:
    emit({"op": "wait_stdin"})
    await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
    return None


async def op_wait_notification(ctx: Context, step: dict[str, Any]) -> dict[str, Any]:
    method = step["method"]
    while True:
        for n in ctx.notifications:
            if n.get("method") == method:
                return {"notification": n}
        await ctx.changed.wait()


async def op_received(ctx: Context, step: dict[str, Any]) -> dict[str, Any]:
    return {"notifications": ctx.notifications, "requests": ctx.requests}


# ---- callbacks --------------------------------------------------------------------------------


def make_callbacks(ctx: Context, spec: dict[str, Any]) -> dict[str, Any]:
    """ClientSession keyword arguments for the callbacks named in `spec`."""
    kwargs: dict[str, Any] = {}

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ServerNotification):
            ctx.record_notification(dump(message.root))
        elif isinstance(message, Exception):
            print(f"py_client: transport error: {message!r}", file=sys.stderr)

    kwargs["message_handler"] = on_message

    if "sampling" in spec:
        sampled = spec["sampling"] or {}

        async def on_sampling(context: Any, params: types.CreateMessageRequestParams) -> Any:
            ctx.requests.append({"method": "sampling/createMessage", "params": dump(params)})
            return types.CreateMessageResult(
                role="assistant",
                content=types.TextContent(type="text", text=sampled.get("text", "sampled")),
                model=sampled.get("model", "py-client-model"),
                stopReason=sampled.get("stopReason", "endTurn"),
            )

        kwargs["sampling_callback"] = on_sampling

    if "elicitation" in spec:
        elicited = spec["elicitation"] or {}

        async def on_elicitation(context: Any, params: types.ElicitRequestParams) -> Any:
            ctx.requests.append({"method": "elicitation/create", "params": dump(params)})
            return types.ElicitResult(
                action=elicited.get("action", "accept"), content=elicited.get("content")
            )

        kwargs["elicitation_callback"] = on_elicitation

    if "roots" in spec:
        roots = [types.Root(uri=r["uri"], name=r.get("name")) for r in spec["roots"] or []]

        async def on_roots(context: Any) -> Any:
            ctx.requests.append({"method": "roots/list"})
            return types.ListRootsResult(roots=roots)

        kwargs["list_roots_callback"] = on_roots

    return kwargs


# ---- driver -----------------------------------------------------------------------------------


async def run_step(ctx: Context, step: dict[str, Any], index: int) -> None:
    op = step.get("op")
    handler = globals().get(f"op_{op}") if isinstance(op, str) else None
    if handler is None:
        raise StepFailed(f"step {index}: unknown op {op!r}")
    expect_error = bool(step.get("expect_error"))
    try:
        with anyio.fail_after(float(step.get("timeout", DEFAULT_STEP_TIMEOUT))):
            out = await handler(ctx, step)
    except McpError as e:
        if not expect_error:
            raise StepFailed(
                f"step {index} ({op}): MCP error {e.error.code}: {e.error.message}"
            ) from e
        emit({"op": op, "error": {"code": e.error.code, "message": e.error.message}})
        return
    except TimeoutError as e:
        raise StepFailed(f"step {index} ({op}): no answer within {step.get('timeout', DEFAULT_STEP_TIMEOUT)} s") from e
    except (KeyError, TypeError, ValueError) as e:
        raise StepFailed(f"step {index} ({op}): bad step or result: {e!r}") from e
    if expect_error:
        raise StepFailed(f"step {index} ({op}): expected an MCP error, got a result: {out!r}")
    if out is not None:
        emit({"op": op, **out})


# Set once every step has passed. The SDK's stdio transport can raise BrokenResourceError while
# it tears down if the server is still sending (periodic resource updates, log messages): that
# is the SDK closing its own streams, not a failed step.
STEPS_DONE = threading.Event()


async def main_async(args: argparse.Namespace, steps: list[dict[str, Any]]) -> None:
    env = dict(os.environ) if args.inherit_env else {}
    # SDK stdio transports start the server with a scrubbed environment: pass what the shim
    # needs explicitly.
    for key in ("MCPD_SOCKET", "RUST_LOG", "RUST_BACKTRACE", "XDG_RUNTIME_DIR"):
        if key in os.environ:
            env[key] = os.environ[key]
    if args.socket:
        env["MCPD_SOCKET"] = args.socket
    for kv in args.env:
        key, _, value = kv.partition("=")
        env[key] = value
    shim_args = list(args.shim_arg)
    if args.profile:
        shim_args += ["--profile", args.profile]
    params = StdioServerParameters(command=args.shim, args=shim_args, env=env)

    ctx = Context()
    callbacks = make_callbacks(ctx, json.loads(args.callbacks) if args.callbacks else {})
    client_info = types.Implementation(name=args.client_name, version="1.0.0")
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write, client_info=client_info, **callbacks) as session:
            ctx.session = session
            try:
                with anyio.fail_after(args.init_timeout):
                    init = await session.initialize()
            except TimeoutError as e:
                raise StepFailed(f"initialize: no answer within {args.init_timeout} s") from e
            except McpError as e:
                raise StepFailed(f"initialize: MCP error {e.error.code}: {e.error.message}") from e
            emit(
                {
                    "op": "initialize",
                    "protocolVersion": init.protocolVersion,
                    "serverInfo": dump(init.serverInfo),
                    "capabilities": dump(init.capabilities),
                }
            )
            for i, step in enumerate(steps):
                await run_step(ctx, step, i)
            STEPS_DONE.set()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shim", required=True, help="path of the mcp-shim binary")
    p.add_argument("--socket", help="daemon socket (sets MCPD_SOCKET for the shim)")
    p.add_argument("--profile", help="profile to attach to (--profile for the shim)")
    p.add_argument("--shim-arg", action="append", default=[], help="extra shim argument")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for the shim")
    p.add_argument("--inherit-env", action="store_true", help="give the shim this whole env")
    p.add_argument("--callbacks", help="JSON object naming the callbacks to install")
    p.add_argument("--client-name", default="py-client", help="clientInfo.name")
    p.add_argument("--init-timeout", type=float, default=DEFAULT_STEP_TIMEOUT)
    p.add_argument("--steps-file", help="read the steps from this file instead")
    p.add_argument("steps", nargs="?", help="JSON list of steps")
    args = p.parse_args()

    try:
        if args.steps_file:
            with open(args.steps_file, encoding="utf-8") as f:
                steps = json.load(f)
        else:
            steps = json.loads(args.steps or "[]")
        if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
            raise ValueError("steps must be a JSON list of objects")
    except (OSError, ValueError) as e:
        print(f"py_client: bad steps: {e}", file=sys.stderr)
        return 2

    try:
        anyio.run(main_async, args, steps)
    except StepFailed as e:
        print(f"py_client: {e}", file=sys.stderr)
        return 1
    except BaseException as e:  # noqa: BLE001 - report anything, including exception groups
        inner = e
        while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
            inner = inner.exceptions[0]
        if STEPS_DONE.is_set() and isinstance(inner, (anyio.BrokenResourceError, anyio.ClosedResourceError)):
            return 0
        if isinstance(inner, StepFailed):
            print(f"py_client: {inner}", file=sys.stderr)
        else:
            print(f"py_client: failed: {inner!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
