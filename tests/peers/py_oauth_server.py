"""An MCP server protected by OAuth, both built from the official Python SDK (`mcp` 1.30.0):
`FastMCP(auth=AuthSettings(...), auth_server_provider=...)` serves the streamable HTTP endpoint
`/mcp` as a resource server (RFC 9728 metadata, `WWW-Authenticate` challenges, bearer checks
with the RFC 8707 resource bound to the token) and, in the same process, the SDK's
authorization server (RFC 8414 metadata, RFC 7591 registration, `/authorize`, `/token` with
PKCE, `/revoke`).

The provider below is in memory and approves at once: `/authorize` redirects straight back
to the client's redirect URI with a code, so a test drives the whole flow by following
redirects with a plain HTTP client instead of a browser.

Usage: py_oauth_server.py [--access-ttl S] [--refresh-delay-ms MS] [--no-rotate]
                          [--iss right|wrong|none] [--pkce-methods plain,...] [--scopes a,b]
                          [--client ID:SECRET:CALLBACK_PORT] [--port PORT]
                          [--stateful] [--end-session-delay-ms MS]

Prints `mcpd-peer-listening 127.0.0.1:PORT` on stderr once it accepts connections (the port is
chosen by the system unless `--port` names one). `--stateful` gives each client an
`Mcp-Session-Id`; `--end-session-delay-ms` answers a session's `DELETE` that much later (a slow
stop). Test hooks, all on the same port:
  GET  /stats                    counters: registrations, authorizations, codes, refreshes,
                                 refresh_failures, revocations, mcp_requests, unauthorized;
                                 refresh_ages: for each refresh, the seconds since the access
                                 token it replaces was issued
  GET  /admin/tokens             every access and refresh token issued so far (for leak checks)
  POST /admin/expire-access      every access token stops working (a reactive refresh follows)
  POST /admin/drop-refresh       every refresh token is forgotten (the next refresh: invalid_grant)
"""

import argparse
import asyncio
import secrets
import socket
import sys
import time

import uvicorn
from pydantic import AnyHttpUrl
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    RefreshToken,
    TokenError,
    construct_redirect_uri,
)
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.server.fastmcp import FastMCP
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

STATS = {
    "registrations": 0,
    "authorizations": 0,
    "codes": 0,
    "refreshes": 0,
    "refresh_failures": 0,
    "revocations": 0,
    "mcp_requests": 0,
    "unauthorized": 0,
    # For each refresh, how many seconds the access token it replaces had been in use.
    "refresh_ages": [],
}
ISSUED = []


class Provider:
    """In-memory OAuthAuthorizationServerProvider that approves every request at once."""

    def __init__(self, args, issuer):
        self.args = args
        self.issuer = issuer
        self.clients = {}
        self.codes = {}
        self.access = {}
        self.refresh = {}
        self.issued_at = {}

    async def get_client(self, client_id):
        return self.clients.get(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull):
        STATS["registrations"] += 1
        self.clients[client_info.client_id] = client_info

    async def authorize(self, client, params: AuthorizationParams) -> str:
        STATS["authorizations"] += 1
        code = "code_" + secrets.token_hex(16)
        self.codes[code] = AuthorizationCode(
            code=code,
            scopes=params.scopes or [],
            expires_at=time.time() + 300,
            client_id=client.client_id,
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
        )
        extra = {}
        if self.args.iss == "right":
            extra["iss"] = self.issuer
        elif self.args.iss == "wrong":
            extra["iss"] = "http://evil.invalid/"
        return construct_redirect_uri(str(params.redirect_uri), code=code, state=params.state, **extra)

    async def load_authorization_code(self, client, authorization_code):
        return self.codes.get(authorization_code)

    def _issue(self, client_id, scopes, resource, refresh=None):
        access = "at_" + secrets.token_hex(20)
        self.access[access] = AccessToken(
            token=access,
            client_id=client_id,
            scopes=scopes,
            expires_at=int(time.time()) + self.args.access_ttl,
            resource=resource,
        )
        if refresh is None:
            refresh = "rt_" + secrets.token_hex(20)
            self.refresh[refresh] = RefreshToken(
                token=refresh, client_id=client_id, scopes=scopes, resource=resource
            )
            ISSUED.append(refresh)
        ISSUED.append(access)
        self.issued_at[refresh] = time.time()
        return OAuthToken(
            access_token=access,
            token_type="Bearer",
            expires_in=self.args.access_ttl,
            refresh_token=refresh,
            scope=" ".join(scopes) if scopes else None,
        )

    async def exchange_authorization_code(self, client, authorization_code):
        STATS["codes"] += 1
        self.codes.pop(authorization_code.code, None)
        return self._issue(client.client_id, authorization_code.scopes, authorization_code.resource)

    async def load_refresh_token(self, client, refresh_token):
        token = self.refresh.get(refresh_token)
        if token is None:
            STATS["refresh_failures"] += 1
        return token

    async def exchange_refresh_token(self, client, refresh_token, scopes):
        STATS["refreshes"] += 1
        STATS["refresh_ages"].append(round(time.time() - self.issued_at.get(refresh_token.token, 0), 3))
        if self.args.refresh_delay_ms:
            await asyncio.sleep(self.args.refresh_delay_ms / 1000)
        if self.args.no_rotate:
            return self._issue(client.client_id, scopes, refresh_token.resource, refresh=refresh_token.token)
        self.refresh.pop(refresh_token.token, None)
        return self._issue(client.client_id, scopes, refresh_token.resource)

    async def load_access_token(self, token):
        found = self.access.get(token)
        if found and found.expires_at and found.expires_at < time.time():
            return None
        return found

    async def revoke_token(self, token):
        STATS["revocations"] += 1
        self.access.pop(token.token, None)
        self.refresh.pop(token.token, None)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--access-ttl", type=int, default=3600)
    parser.add_argument("--refresh-delay-ms", type=int, default=0)
    parser.add_argument("--no-rotate", action="store_true")
    parser.add_argument("--iss", choices=["right", "wrong", "none"], default="right")
    parser.add_argument("--pkce-methods", default=None)
    parser.add_argument("--scopes", default="mcp:read,mcp:write")
    parser.add_argument("--client", default=None, help="ID:SECRET:PORT of a pre-registered client")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stateful", action="store_true")
    parser.add_argument("--end-session-delay-ms", type=int, default=0)
    args = parser.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    issuer = base + "/"
    scopes = [s for s in args.scopes.split(",") if s]

    provider = Provider(args, issuer)
    if args.client:
        client_id, client_secret, callback_port = args.client.split(":")
        provider.clients[client_id] = OAuthClientInformationFull(
            client_id=client_id,
            client_secret=client_secret,
            redirect_uris=[f"http://127.0.0.1:{callback_port}/callback"],
            token_endpoint_auth_method="client_secret_post",
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            scope=" ".join(scopes),
        )
    mcp = FastMCP(
        "py-oauth",
        auth_server_provider=provider,
        auth=AuthSettings(
            issuer_url=AnyHttpUrl(issuer),
            resource_server_url=AnyHttpUrl(base + "/mcp"),
            validate_token_resource=True,
            required_scopes=scopes,
            client_registration_options=ClientRegistrationOptions(
                enabled=True, valid_scopes=scopes, default_scopes=scopes
            ),
            revocation_options=RevocationOptions(enabled=True),
        ),
        host="127.0.0.1",
        port=port,
        stateless_http=not args.stateful,
        json_response=True,
    )

    @mcp.tool()
    def whoami() -> str:
        """Answers when the request carried a valid token."""
        return "authorized"

    app = mcp.streamable_http_app()

    async def stats(request: Request):
        return JSONResponse(STATS)

    async def tokens(request: Request):
        return JSONResponse(ISSUED)

    async def expire_access(request: Request):
        provider.access.clear()
        return JSONResponse({"ok": True})

    async def drop_refresh(request: Request):
        provider.refresh.clear()
        return JSONResponse({"ok": True})

    routes = [
        Route("/stats", stats, methods=["GET"]),
        Route("/admin/tokens", tokens, methods=["GET"]),
        Route("/admin/expire-access", expire_access, methods=["POST"]),
        Route("/admin/drop-refresh", drop_refresh, methods=["POST"]),
    ]
    if args.pkce_methods is not None:
        # Metadata that does not offer S256 (a client must refuse to go on).
        async def weak_metadata(request: Request):
            return JSONResponse(
                {
                    "issuer": issuer,
                    "authorization_endpoint": base + "/authorize",
                    "token_endpoint": base + "/token",
                    "registration_endpoint": base + "/register",
                    "response_types_supported": ["code"],
                    **(
                        {"code_challenge_methods_supported": args.pkce_methods.split(",")}
                        if args.pkce_methods
                        else {}
                    ),
                }
            )

        routes.append(Route("/.well-known/oauth-authorization-server", weak_metadata, methods=["GET"]))
    app.router.routes[0:0] = routes

    inner = app

    async def counting(scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/mcp"):
            STATS["mcp_requests"] += 1
            if scope["method"] == "DELETE" and args.end_session_delay_ms:
                await asyncio.sleep(args.end_session_delay_ms / 1000)

            async def watch(message):
                if message["type"] == "http.response.start" and message["status"] == 401:
                    STATS["unauthorized"] += 1
                await send(message)

            return await inner(scope, receive, watch)
        return await inner(scope, receive, send)

    config = uvicorn.Config(counting, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)

    async def run():
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.02)
        print(f"mcpd-peer-listening 127.0.0.1:{port}", file=sys.stderr, flush=True)
        await task

    asyncio.run(run())


if __name__ == "__main__":
    main()
