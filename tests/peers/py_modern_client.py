"""The Python SDK 2.x client (`mcp` 2.x, `tests/peers/.venv-modern`) through mcp-shim.

    py_modern_client.py --shim PATH --socket PATH --mode {auto,2026-07-28} -- TOOL ARGS_JSON
    py_modern_client.py --shim PATH --socket PATH --mode M [--callbacks JSON] --calls JSON

Connects with `mcp.Client` in the given mode (`auto` probes with `server/discover` and falls back
to `initialize` on a legacy server; a version pins it, no probe), lists the tools, calls TOOL
with ARGS_JSON (or each `[tool, arguments]` of `--calls` in turn), and prints one JSON line: the
negotiated protocol version, the tool names, the first call's content and whether it was an
error, `calls` (per call: `content` and `isError`, or `error` with `code` and `message`), and
`callbacks` (the methods of the callbacks the SDK invoked, in order).

`--callbacks` installs callbacks, so the client declares only those capabilities, e.g.
    {"sampling":{"text":"from the client"},"elicitation":{"action":"accept","content":{..}},
     "roots":[{"uri":"file:///tmp","name":"tmp"}]}
(an elicitation callback answers URL-mode requests with `{"action": ACTION}` only). Exits
non-zero with the error on stderr if connecting or listing fails.
"""

import argparse
import asyncio
import json
import os
from typing import Any

from mcp import Client, StdioServerParameters, types
from mcp.shared.exceptions import MCPError


def make_callbacks(spec: dict[str, Any], invoked: list[dict[str, Any]]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if "sampling" in spec:
        sampled = spec["sampling"] or {}

        async def on_sampling(context: Any, params: types.CreateMessageRequestParams) -> Any:
            invoked.append({"method": "sampling/createMessage"})
            return types.CreateMessageResult(
                role="assistant",
                content=types.TextContent(type="text", text=sampled.get("text", "sampled")),
                model="py-modern-client-model",
                stop_reason="endTurn",
            )

        kwargs["sampling_callback"] = on_sampling
    if "elicitation" in spec:
        elicited = spec["elicitation"] or {}

        async def on_elicitation(context: Any, params: Any) -> Any:
            mode = getattr(params, "mode", "form")
            invoked.append({"method": "elicitation/create", "mode": mode})
            if mode == "url":
                return types.ElicitResult(action=elicited.get("action", "accept"))
            return types.ElicitResult(action=elicited.get("action", "accept"), content=elicited.get("content"))

        kwargs["elicitation_callback"] = on_elicitation
    if "roots" in spec:
        roots = [types.Root(uri=r["uri"], name=r.get("name")) for r in spec["roots"] or []]

        async def on_roots(context: Any) -> Any:
            invoked.append({"method": "roots/list"})
            return types.ListRootsResult(roots=roots)

        kwargs["list_roots_callback"] = on_roots
    return kwargs


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shim", required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--mode", required=True)
    parser.add_argument("--callbacks", help="JSON object naming the callbacks to install")
    parser.add_argument("--calls", help="JSON list of [tool, arguments]")
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    a = parser.parse_args()
    rest = a.rest[1:] if a.rest[:1] == ["--"] else a.rest
    calls = json.loads(a.calls) if a.calls else [[rest[0], json.loads(rest[1])]]
    invoked: list[dict[str, Any]] = []
    callbacks = make_callbacks(json.loads(a.callbacks) if a.callbacks else {}, invoked)
    server = StdioServerParameters(
        command=a.shim, args=["--socket", a.socket], env=dict(os.environ)
    )
    async with Client(server, mode=a.mode, **callbacks) as client:
        tools = await client.list_tools()
        results = []
        for tool, arguments in calls:
            try:
                result = await client.call_tool(tool, arguments)
                results.append(
                    {
                        "content": [c.model_dump(mode="json") for c in result.content],
                        "isError": bool(result.is_error),
                    }
                )
            except MCPError as e:
                results.append({"error": {"code": e.error.code, "message": e.error.message}})
        first = results[0]
        print(
            json.dumps(
                {
                    "protocol": client.protocol_version,
                    "server": client.server_info.name if client.server_info else None,
                    "tools": [t.name for t in tools.tools],
                    "content": first.get("content"),
                    "isError": first.get("isError"),
                    "calls": results,
                    "callbacks": invoked,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
