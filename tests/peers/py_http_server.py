#!/usr/bin/env python3
"""An MCP server built on the official Python SDK (FastMCP), served over streamable HTTP on
127.0.0.1, for mcpd's HTTP upstream tests and benchmark.

    py_http_server.py [--port N] [--json-response]
    py_http_server.py --stdio          # the same server over stdio (a legacy-era upstream)

`--port 0` (the default) lets the kernel pick a free port. Once listening, it prints one line to
stderr, as tests/peers/loopback.mjs does for the node peers:

    mcpd-peer-listening 127.0.0.1:<port>

The endpoint is http://127.0.0.1:<port>/mcp. The listening socket has SO_REUSEADDR, so a test
can stop the server and start a new one on the same port (its sessions are then unknown).

What it offers:
- tools: echo(message), add(a, b), slow(steps) (reports progress each step), sample(prompt)
  (asks the client for a sampling/createMessage), sample_slowly(prompt, steps) (progress, then
  sampling, then progress each step), ask(question) (asks the client for a form
  elicitation), ask_url(url) (asks for a URL-mode elicitation, then announces its completion), roots() (asks the client for
  roots/list), log(message) (sends a notifications/message), stats() (what this process saw:
  the sessions it issued, those still open (`live`) and the initialize requests it got)
- resources: py://info, and the template py://greeting/{name}
- prompts: greet(name)
"""

from __future__ import annotations

import argparse
import json
import socket
import sys

import anyio
import uvicorn
from mcp.server.fastmcp import Context, FastMCP
from mcp.types import SamplingMessage, TextContent
from pydantic import BaseModel

mcp = FastMCP("py-http-peer")

# What this process saw, for tests that count sessions.
SEEN = {"sessions": [], "initializes": 0}


@mcp.tool()
def echo(message: str) -> str:
    """Echoes the message back."""
    return f"Echo: {message}"


@mcp.tool()
def add(a: int, b: int) -> str:
    """Adds two numbers."""
    return f"{a} + {b} = {a + b}"


@mcp.tool()
async def slow(steps: int, ctx: Context) -> str:
    """Takes `steps` short steps, reporting progress after each."""
    for i in range(1, steps + 1):
        await anyio.sleep(0.05)
        await ctx.report_progress(i, steps, f"step {i} of {steps}")
    return f"done after {steps} steps"


@mcp.tool()
async def sample(prompt: str, ctx: Context) -> str:
    """Asks the client's model (sampling/createMessage) and returns its answer."""
    result = await ctx.session.create_message(
        messages=[SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
        max_tokens=50,
    )
    text = result.content.text if isinstance(result.content, TextContent) else str(result.content)
    return f"sampled: {text}"


@mcp.tool()
async def sample_slowly(prompt: str, steps: int, ctx: Context) -> str:
    """Reports progress, asks the client's model, then reports progress again each step."""
    await ctx.report_progress(0, steps, "asking the model")
    result = await ctx.session.create_message(
        messages=[SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
        max_tokens=50,
    )
    for i in range(1, steps + 1):
        await ctx.report_progress(i, steps, f"step {i} of {steps}")
    text = result.content.text if isinstance(result.content, TextContent) else str(result.content)
    return f"sampled slowly: {text}"


class Answer(BaseModel):
    answer: str


@mcp.tool()
async def ask(question: str, ctx: Context) -> str:
    """Asks the user (a form elicitation) and returns what they said."""
    result = await ctx.elicit(message=question, schema=Answer)
    if result.action == "accept" and result.data is not None:
        return f"elicited: {result.data.answer}"
    return f"elicitation {result.action}"


@mcp.tool()
async def ask_url(url: str, ctx: Context) -> str:
    """Asks the user to visit a URL (a URL-mode elicitation) and returns their action."""
    result = await ctx.elicit_url(message="Please open the page", url=url, elicitation_id="visit-1")
    if result.action == "accept":
        # The out-of-band interaction is over (at once, in a test): 2025-11-25 says so.
        await ctx.session.send_elicit_complete("visit-1", ctx.request_id)
    return f"url elicitation: {result.action}"


@mcp.tool()
async def roots(ctx: Context) -> str:
    """Asks the client for its roots and lists their URIs."""
    result = await ctx.session.list_roots()
    return "roots: " + ",".join(str(r.uri) for r in result.roots)


@mcp.tool()
async def log(message: str, ctx: Context) -> str:
    """Sends `message` as a log notification."""
    await ctx.info(message)
    return "logged"


@mcp.tool()
def stats() -> str:
    """The sessions this process issued, those still open, and the initialize requests it
    received, as JSON."""
    live = list(getattr(mcp.session_manager, "_server_instances", {}))
    return json.dumps({**SEEN, "live": live})


@mcp.resource("py://info")
def info() -> str:
    """A static resource."""
    return "python http peer"


@mcp.resource("py://greeting/{name}")
def greeting(name: str) -> str:
    """A resource template."""
    return f"Hello, {name}!"


@mcp.prompt()
def greet(name: str) -> str:
    """A prompt with one argument."""
    return f"Please greet {name} warmly."


def counting(app):
    """ASGI middleware that records issued session ids and initialize requests."""

    async def wrapped(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)

        async def receive_counting():
            message = await receive()
            if message.get("type") == "http.request" and b'"initialize"' in message.get("body", b""):
                SEEN["initializes"] += 1
            return message

        async def send_counting(message):
            if message.get("type") == "http.response.start":
                for name, value in message.get("headers", []):
                    if name.lower() == b"mcp-session-id":
                        sid = value.decode()
                        if sid not in SEEN["sessions"]:
                            SEEN["sessions"].append(sid)
            await send(message)

        return await app(scope, receive_counting, send_counting)

    return wrapped


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--json-response", action="store_true", help="answer with JSON, not SSE")
    p.add_argument("--stdio", action="store_true", help="serve stdio instead of HTTP")
    args = p.parse_args()
    if args.stdio:
        mcp.settings.log_level = "WARNING"
        mcp.run("stdio")
        return 0
    mcp.settings.json_response = args.json_response
    mcp.settings.log_level = "WARNING"

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: without it a keep-alive client waits ~40 ms per call
    # (Nagle's algorithm against delayed ACKs), which would swamp any latency measured here.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)
    sock.set_inheritable(True)
    port = sock.getsockname()[1]

    config = uvicorn.Config(counting(mcp.streamable_http_app()), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    print(f"mcpd-peer-listening 127.0.0.1:{port}", file=sys.stderr, flush=True)
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
