#!/usr/bin/env python3
"""A modern-only MCP server (MCP 2026-07-28) built on the Python SDK 2.x (`.venv-modern`), for
mcpd's tests of modern upstreams and of the translation between the protocol eras.

    py_modern_server.py                      # stdio
    py_modern_server.py --http [--port N] [--json-response]

It accepts only 2026-07-28, as strictly as the SDK allows:
- stdio: the SDK's modern serving loop is used directly (`runner._serve_modern_stream`), not the
  dual-era loop `Server.run` uses: `initialize` gets -32022 (UnsupportedProtocolVersion) and a
  request without the per-request `_meta` envelope is rejected by the SDK's inbound ladder.
- HTTP: the SDK's stateless streamable HTTP app, behind a guard that answers any request whose
  `MCP-Protocol-Version` header is not 2026-07-28 with HTTP 400 and -32022 (so `initialize`,
  legacy GET streams and session ids never reach the SDK's legacy paths). Once listening it
  prints `mcpd-peer-listening 127.0.0.1:<port>` on stderr; the endpoint is `/mcp`.

Tools (server-to-client requests only through Multi Round-Trip Requests, `InputRequiredResult`):
- echo(message) -> "Echo: <message>"
- sample(prompt) -> asks sampling/createMessage, returns "sampled: <text>"
- sample_anyway(prompt) -> the same without checking the client's capabilities
- ask(question) -> asks a form elicitation {answer}, returns "elicited: <answer>"
- ask_url(url) -> asks a URL-mode elicitation, returns "url elicitation: <action>"
- roots() -> asks roots/list, returns "roots: <uri>,<uri>"
- grow(name) -> adds a tool `name` (it echoes) and announces the change on the listens
  (`notifications/tools/list_changed`), returns "grew: <name>"
- touch(uri) -> announces `notifications/resources/updated` for `uri` on the listens
- end_listens() -> ends every open listen gracefully (the SDK's ListenHandler.close)
- resource `modern://note` (text "a note"), so a client can subscribe to it
- wait_for(key) -> logs "<key>: waiting", waits until release(key), logs "<key>: released"
- release(key) -> logs "release <key>" and lets wait_for(key) go on
- prompt greet(name) -> "Please greet <name> warmly."
- stats() -> JSON of what it saw: per request the HTTP Mcp-Method / Mcp-Name / session header
  (HTTP only), the protocol version and client capabilities of each tools/call.

Each interactive tool checks the capabilities the request declared in `_meta` (it never asks
what the client did not declare: it answers an error naming the capability instead) and seals
its `requestState` through the SDK (bound to the tool's name and arguments), so a retry must
carry the server's own tool name, identical arguments and the state unchanged.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any, NoReturn

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import InputRequiredResult

MODERN = "2026-07-28"
SEEN: dict[str, Any] = {"http": [], "calls": []}

mcp = MCPServer("py-modern-peer", version="2.0", instructions="A modern-only test server.")


def _dump(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(by_alias=True, exclude_none=True, mode="json")
    return value


def _record(ctx: Context, tool: str) -> dict[str, Any]:
    caps = _dump(ctx.client_capabilities) or {}
    SEEN["calls"].append({"tool": tool, "protocol": ctx.protocol_version, "capabilities": caps})
    return caps


def _missing(capability: str) -> NoReturn:
    raise ToolError(f"the client did not declare {capability}")


def _answer(ctx: Context, key: str) -> dict[str, Any] | None:
    responses = ctx.input_responses or {}
    if key in responses and ctx.request_state == f"asked:{key}":
        return _dump(responses[key])
    return None


def _ask(key: str, method: str, params: dict[str, Any] | None) -> InputRequiredResult:
    request: dict[str, Any] = {"method": method}
    if params is not None:
        request["params"] = params
    return InputRequiredResult.model_validate(
        {"resultType": "input_required", "inputRequests": {key: request}, "requestState": f"asked:{key}"}
    )


@mcp.tool()
def echo(message: str, ctx: Context) -> str:
    """Echoes the message back."""
    _record(ctx, "echo")
    return f"Echo: {message}"


@mcp.tool()
def sample(prompt: str, ctx: Context) -> str | InputRequiredResult:
    """Asks the client's model (sampling/createMessage) and returns its answer."""
    caps = _record(ctx, "sample")
    answer = _answer(ctx, "llm")
    if answer is not None:
        content = answer.get("content") or {}
        return f"sampled: {content.get('text', '')}"
    if "sampling" not in caps:
        _missing("sampling")
    messages = [{"role": "user", "content": {"type": "text", "text": prompt}}]
    return _ask("llm", "sampling/createMessage", {"messages": messages, "maxTokens": 50})


@mcp.tool()
def sample_anyway(prompt: str, ctx: Context) -> str | InputRequiredResult:
    """Like sample, but asks even a client that did not declare sampling (a careless server)."""
    _record(ctx, "sample_anyway")
    answer = _answer(ctx, "llm")
    if answer is not None:
        return f"sampled: {(answer.get('content') or {}).get('text', '')}"
    messages = [{"role": "user", "content": {"type": "text", "text": prompt}}]
    return _ask("llm", "sampling/createMessage", {"messages": messages, "maxTokens": 50})


@mcp.tool()
def ask(question: str, ctx: Context) -> str | InputRequiredResult:
    """Asks the user (a form elicitation) and returns what they said."""
    caps = _record(ctx, "ask")
    answer = _answer(ctx, "form")
    if answer is not None:
        if answer.get("action") == "accept":
            return f"elicited: {(answer.get('content') or {}).get('answer')}"
        return f"elicitation {answer.get('action')}"
    elicitation = caps.get("elicitation")
    if elicitation is None or ("form" not in elicitation and "url" in elicitation):
        _missing("elicitation (form)")
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    return _ask("form", "elicitation/create", {"mode": "form", "message": question, "requestedSchema": schema})


@mcp.tool()
def ask_url(url: str, ctx: Context) -> str | InputRequiredResult:
    """Asks the user to visit a URL (a URL-mode elicitation) and returns their action."""
    caps = _record(ctx, "ask_url")
    answer = _answer(ctx, "visit")
    if answer is not None:
        return f"url elicitation: {answer.get('action')}"
    if "url" not in (caps.get("elicitation") or {}):
        _missing("elicitation (url)")
    params = {"mode": "url", "message": "Please open the page", "url": url, "elicitationId": "visit-1"}
    return _ask("visit", "elicitation/create", params)


@mcp.tool()
def roots(ctx: Context) -> str | InputRequiredResult:
    """Asks the client for its roots and lists their URIs."""
    caps = _record(ctx, "roots")
    answer = _answer(ctx, "roots")
    if answer is not None:
        return "roots: " + ",".join(r.get("uri", "") for r in answer.get("roots") or [])
    if "roots" not in caps:
        _missing("roots")
    return _ask("roots", "roots/list", None)


@mcp.tool()
async def grow(name: str, ctx: Context) -> str:
    """Adds a tool and announces the change to the listening clients."""

    def grown(message: str) -> str:
        return f"{name}: {message}"

    mcp.add_tool(grown, name=name, description=f"A tool added by grow ({name}).")
    await ctx.notify_tools_changed()
    return f"grew: {name}"


@mcp.tool()
async def touch(uri: str, ctx: Context) -> str:
    """Announces that the resource `uri` changed to the listening clients."""
    await ctx.notify_resource_updated(uri)
    return f"touched: {uri}"


@mcp.tool()
def end_listens(ctx: Context) -> str:
    """Ends every open subscriptions/listen gracefully, as a server shutting down would."""
    mcp._lowlevel_server._request_handlers["subscriptions/listen"].handler.close()
    return "ended"


@mcp.resource("modern://note", name="note", mime_type="text/plain")
def note() -> str:
    """A resource clients can subscribe to."""
    return "a note"


_GATES: dict[str, anyio.Event] = {}


def _gate(key: str) -> anyio.Event:
    return _GATES.setdefault(key, anyio.Event())


@mcp.tool()
async def wait_for(key: str, ctx: Context) -> str:
    """Logs, waits until release(key) is called, logs again."""
    await ctx.info(f"{key}: waiting")
    await _gate(key).wait()
    await ctx.info(f"{key}: released")
    return f"released: {key}"


@mcp.tool()
async def release(key: str, ctx: Context) -> str:
    """Logs and lets wait_for(key) go on."""
    await ctx.info(f"release {key}")
    _gate(key).set()
    return f"release: {key}"


@mcp.prompt()
def greet(name: str) -> str:
    """A prompt with one argument."""
    return f"Please greet {name} warmly."


@mcp.tool()
def stats(ctx: Context) -> str:
    """What this process saw, as JSON."""
    return json.dumps(SEEN)


async def serve_stdio() -> None:
    from mcp.server.runner import _serve_modern_stream
    from mcp.server.stdio import stdio_server

    server = mcp._lowlevel_server
    async with server.lifespan(server) as state:
        async with stdio_server() as (read_stream, write_stream):
            await _serve_modern_stream(server, read_stream, write_stream, lifespan_state=state, raise_exceptions=False)


def modern_only(app):
    """ASGI guard: only requests that declare MCP-Protocol-Version 2026-07-28 reach the SDK."""

    async def guarded(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        SEEN["http"].append(
            {
                "method": scope["method"],
                "mcp-method": headers.get("mcp-method"),
                "mcp-name": headers.get("mcp-name"),
                "session": headers.get("mcp-session-id"),
                "protocol": headers.get("mcp-protocol-version"),
            }
        )
        version = headers.get("mcp-protocol-version")
        if version != MODERN:
            body = json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": {
                        "code": -32022,
                        "message": f"Unsupported protocol version {version}: this server speaks only {MODERN}",
                        "data": {"supported": [MODERN], "requested": version},
                    },
                }
            ).encode()
            await send(
                {"type": "http.response.start", "status": 400, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": body})
            return
        return await app(scope, receive, send)

    return guarded


def serve_http(port: int, json_response: bool) -> None:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.set_inheritable(True)
    app = mcp.streamable_http_app(stateless_http=True, json_response=json_response)
    config = uvicorn.Config(modern_only(app), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    print(f"mcpd-peer-listening 127.0.0.1:{sock.getsockname()[1]}", file=sys.stderr, flush=True)
    server.run(sockets=[sock])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--json-response", action="store_true")
    args = p.parse_args()
    if args.http:
        serve_http(args.port, args.json_response)
    else:
        anyio.run(serve_stdio)
    return 0


if __name__ == "__main__":
    sys.exit(main())
