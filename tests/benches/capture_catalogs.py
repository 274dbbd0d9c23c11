#!/usr/bin/env python3
"""Captures the tool definitions of popular MCP servers from their registry packages, for the
search-recall bench (tests/benches/tokens.rs, docs/BENCHMARKS.md).

Each server is run once, exactly as a user would (npx for npm packages, a throwaway virtualenv
for PyPI packages), asked `initialize` and `tools/list` (all pages) over stdio, and stopped. The
answer is written to tests/benches/catalogs/<name>.json with the package, its exact version, the
command and the date:

    python3 tests/benches/capture_catalogs.py [NAME ...]

Needs network access to npm and PyPI. Nothing here runs in the test suite: the captured files
are checked in, so the bench works offline.
"""

import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "catalogs")
WORK = tempfile.mkdtemp(prefix="mcpd-capture-")
# mcp-server-git wants a repository.
subprocess.run(["git", "init", "-q", WORK], check=True)

# name -> (registry, package, args after the package's command, extra environment)
SERVERS = {
    "filesystem": ("npm", "@modelcontextprotocol/server-filesystem", [WORK], {}),
    "memory": ("npm", "@modelcontextprotocol/server-memory", [], {}),
    "everything": ("npm", "@modelcontextprotocol/server-everything", [], {}),
    "github": ("npm", "@modelcontextprotocol/server-github", [], {"GITHUB_PERSONAL_ACCESS_TOKEN": "unused"}),
    "sequential-thinking": ("npm", "@modelcontextprotocol/server-sequential-thinking", [], {}),
    "playwright": ("npm", "@playwright/mcp", [], {}),
    "context7": ("npm", "@upstash/context7-mcp", [], {}),
    "notion": ("npm", "@notionhq/notion-mcp-server", [], {}),
    "slack": ("npm", "@modelcontextprotocol/server-slack", [], {"SLACK_BOT_TOKEN": "unused", "SLACK_TEAM_ID": "unused"}),
    "brave-search": ("npm", "@modelcontextprotocol/server-brave-search", [], {"BRAVE_API_KEY": "unused"}),
    "postgres": ("npm", "@modelcontextprotocol/server-postgres", ["postgresql://localhost/unused"], {}),
    "git": ("pypi", "mcp-server-git", ["--repository", WORK], {}),
    "fetch": ("pypi", "mcp-server-fetch", [], {}),
    "time": ("pypi", "mcp-server-time", [], {}),
    "sqlite": ("pypi", "mcp-server-sqlite", ["--db-path", os.path.join(WORK, "x.db")], {}),
}


def npm_version(package):
    out = subprocess.run(["npm", "view", package, "version"], capture_output=True, text=True, timeout=120)
    return out.stdout.strip()


def pypi_command(package):
    venv = os.path.join(WORK, "venv-" + package)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
    pip = os.path.join(venv, "bin", "pip")
    subprocess.run([pip, "install", "-q", package], check=True, timeout=600)
    out = subprocess.run([pip, "show", package], capture_output=True, text=True, check=True)
    version = next(l.split(":", 1)[1].strip() for l in out.stdout.splitlines() if l.startswith("Version:"))
    return [os.path.join(venv, "bin", package)], version


def capture(name):
    registry, package, args, env = SERVERS[name]
    if registry == "npm":
        version = npm_version(package)
        command = ["npx", "-y", f"{package}@{version}"]
    else:
        command, version = pypi_command(package)
    proc = subprocess.Popen(command + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env={**os.environ, **env}, cwd=WORK,
                            text=True)
    lines = []
    reader = threading.Thread(target=lambda: [lines.append(l) for l in proc.stdout], daemon=True)
    reader.start()

    def ask(i, method, params):
        proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}) + "\n")
        proc.stdin.flush()
        deadline = time.time() + 300
        while time.time() < deadline:
            if proc.poll() is not None and not reader.is_alive():
                raise RuntimeError(f"{name}: exited with {proc.returncode} before answering {method}")
            for l in list(lines):
                try:
                    m = json.loads(l)
                except ValueError:
                    continue
                if m.get("id") == i:
                    return m
            time.sleep(0.05)
        raise TimeoutError(f"{name}: no answer to {method}")

    try:
        init = ask(1, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                     "clientInfo": {"name": "mcpd-capture", "version": "1"}})
        proc.stdin.write(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}) + "\n")
        proc.stdin.flush()
        tools, cursor, i = [], None, 2
        while True:
            page = ask(i, "tools/list", {"cursor": cursor} if cursor else {})
            tools += page["result"]["tools"]
            cursor = page["result"].get("nextCursor")
            i += 1
            if not cursor:
                break
    finally:
        # npx runs the server under a shell: end the whole group, not just npx.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    record = {
        "server": name,
        "package": f"{registry}:{package}@{version}",
        "command": " ".join(([f"npx -y {package}@{version}"] if registry == "npm" else [package]) + [
            "<dir>" if a.startswith(WORK) else a for a in args]),
        "captured": datetime.date.today().isoformat(),
        "serverInfo": init["result"].get("serverInfo"),
        "tools": tools,
    }
    with open(os.path.join(OUT, f"{name}.json"), "w") as f:
        json.dump(record, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"{name}: {len(tools)} tools from {record['package']}", flush=True)


def main():
    os.makedirs(OUT, exist_ok=True)
    failed = 0
    for name in sys.argv[1:] or SERVERS:
        try:
            capture(name)
        except Exception as e:  # one server failing does not stop the others
            failed += 1
            print(f"{name}: FAILED: {e}", file=sys.stderr, flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
