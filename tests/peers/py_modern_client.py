"""The Python SDK 2.x client (`mcp` 2.x, `tests/peers/.venv-modern`) through mcp-shim.

    py_modern_client.py --shim PATH --socket PATH --mode {auto,2026-07-28} -- TOOL ARGS_JSON

Connects with `mcp.Client` in the given mode (`auto` probes with `server/discover` and falls back
to `initialize` on a legacy server; a version pins it, no probe), lists the tools, calls TOOL
with ARGS_JSON, and prints one JSON line: the negotiated protocol version, the tool names, the
call's content and whether it was an error. Exits non-zero with the error on stderr otherwise.
"""

import argparse
import asyncio
import json
import os
import sys

from mcp import Client, StdioServerParameters


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shim", required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--mode", required=True)
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    a = parser.parse_args()
    rest = a.rest[1:] if a.rest[:1] == ["--"] else a.rest
    tool, arguments = rest[0], json.loads(rest[1])
    server = StdioServerParameters(
        command=a.shim, args=["--socket", a.socket], env=dict(os.environ)
    )
    async with Client(server, mode=a.mode) as client:
        tools = await client.list_tools()
        result = await client.call_tool(tool, arguments)
        print(
            json.dumps(
                {
                    "protocol": client.protocol_version,
                    "server": client.server_info.name if client.server_info else None,
                    "tools": [t.name for t in tools.tools],
                    "content": [c.model_dump(mode="json") for c in result.content],
                    "isError": bool(result.is_error),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
