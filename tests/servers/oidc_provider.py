"""A real OpenID Connect provider for the single sign-on tests, served over a real socket on 127.0.0.1.

It implements what the app relies on, as a provider such as Keycloak or Entra ID does: discovery
(``/.well-known/openid-configuration``), a JWKS, the authorization endpoint (a login form where the test, or
Chromium, types a username), and the token endpoint for the authorization code grant with client authentication
and PKCE (S256 only; a wrong ``code_verifier`` is refused), issuing RS256-signed ID tokens (joserfc) with a
``groups`` claim. Tests change its users' groups between sign-ins, and can make it issue a tampered or an expired
ID token to check that the app refuses them. Nothing in the app is mocked: the app's authlib client fetches
discovery and keys from here and validates the tokens itself.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import RSAKey

CLIENT_ID = "connectors-admin"
CLIENT_SECRET = "test-client-secret"


@dataclass
class IdpUser:
    sub: str
    groups: list[str]
    email: str = ""
    given_name: str = ""
    family_name: str = ""


@dataclass
class OidcProvider:
    users: dict[str, IdpUser] = field(default_factory=dict)
    redirect_uri_prefixes: list[str] = field(default_factory=list)
    # What the next token response does wrong: "tampered" (payload changed after signing), "expired", "no_id_token".
    misbehave: str = ""
    token_requests: list[dict] = field(default_factory=list)
    authorization_requests: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-key-1", "use": "sig", "alg": "RS256"})
        self._codes: dict[str, dict] = {}
        self._lock = threading.Lock()

    # --- serving ---------------------------------------------------------------------------------------------------

    def start(self) -> OidcProvider:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                provider._handle(self, "GET")

            def do_POST(self):
                provider._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    # --- the endpoints -----------------------------------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(request.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        form = {}
        if method == "POST":
            length = int(request.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(request.rfile.read(length).decode()).items()}
        routes = {
            ("GET", "/.well-known/openid-configuration"): lambda: self._json(request, 200, self.discovery()),
            ("GET", "/jwks"): lambda: self._json(request, 200, {"keys": [self.key.as_dict(private=False)]}),
            ("GET", "/authorize"): lambda: self._authorize_form(request, query),
            ("POST", "/authorize"): lambda: self._authorize(request, form),
            ("POST", "/token"): lambda: self._token(request, form),
        }
        route = routes.get((method, url.path))
        if route is None:
            self._json(request, 404, {"error": "not_found"})
        else:
            route()

    def discovery(self) -> dict:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": ["openid", "email", "profile"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "preferred_username", "email", "groups"],
        }

    def _authorization_error(self, params: dict) -> str:
        if params.get("client_id") != CLIENT_ID:
            return "unknown client_id"
        if not any(params.get("redirect_uri", "").startswith(p) for p in self.redirect_uri_prefixes):
            return "redirect_uri not registered"
        if params.get("response_type") != "code":
            return "only response_type=code"
        if "openid" not in params.get("scope", "").split():
            return "scope must include openid"
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            return "PKCE with S256 is required"
        return ""

    def _authorize_form(self, request, params: dict) -> None:
        self.authorization_requests.append(dict(params))
        problem = self._authorization_error(params)
        if problem:
            self._html(request, 400, f"<h1>Bad request</h1><p>{html.escape(problem)}</p>")
            return
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in params.items()
        )
        self._html(request, 200, f"""<h1>Test identity provider</h1>
<form method="post" action="/authorize">{hidden}
<label for="idp-username">Username</label><input id="idp-username" name="username">
<button type="submit" id="idp-sign-in">Sign in</button></form>""")

    def _authorize(self, request, form: dict) -> None:
        problem = self._authorization_error(form)
        user = self.users.get(form.get("username", ""))
        if problem or user is None:
            self._html(request, 400, f"<h1>Refused</h1><p>{html.escape(problem or 'unknown user')}</p>")
            return
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes[code] = {**form, "issued": time.time()}
        query = urlencode({"code": code, "state": form.get("state", "")})
        request.send_response(302)
        request.send_header("Location", f"{form['redirect_uri']}?{query}")
        request.send_header("Content-Length", "0")
        request.end_headers()

    def _client_authenticated(self, request, form: dict) -> bool:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        return client_id == CLIENT_ID and secrets.compare_digest(secret, CLIENT_SECRET)

    def _token(self, request, form: dict) -> None:
        self.token_requests.append(dict(form))
        if not self._client_authenticated(request, form):
            self._json(request, 401, {"error": "invalid_client"})
            return
        with self._lock:
            grant = self._codes.pop(form.get("code", ""), None)  # a code is used once
        if form.get("grant_type") != "authorization_code" or grant is None:
            self._json(request, 400, {"error": "invalid_grant"})
            return
        if form.get("redirect_uri") != grant["redirect_uri"]:
            self._json(request, 400, {"error": "invalid_grant", "error_description": "redirect_uri mismatch"})
            return
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if not verifier or challenge != grant["code_challenge"]:
            self._json(request, 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"})
            return
        user = self.users[grant["username"]]
        misbehave, self.misbehave = self.misbehave, ""
        body = {"access_token": secrets.token_urlsafe(24), "token_type": "Bearer", "expires_in": 300}
        if misbehave != "no_id_token":
            body["id_token"] = self._id_token(grant, user, misbehave)
        self._json(request, 200, body)

    def _id_token(self, grant: dict, user: IdpUser, misbehave: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer, "sub": user.sub, "aud": CLIENT_ID, "iat": now, "exp": now + 300,
            "nonce": grant.get("nonce", ""), "preferred_username": grant["username"], "email": user.email,
            "given_name": user.given_name, "family_name": user.family_name, "groups": list(user.groups),
        }
        if misbehave == "expired":
            claims["iat"], claims["exp"] = now - 7200, now - 3600  # well past any clock-skew leeway
        token = jwt.encode({"alg": "RS256", "kid": self.key.kid}, claims, self.key)
        if misbehave == "tampered":
            # The classic attack: keep the signature, give yourself the administrators' group.
            header, _payload, signature = token.split(".")
            claims["groups"] = [*claims["groups"], "connectors-superusers"]
            payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
            token = f"{header}.{payload}.{signature}"
        return token

    # --- responses ------------------------------------------------------------------------------------------------------

    @staticmethod
    def _json(request, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Cache-Control", "no-store")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    @staticmethod
    def _html(request, status: int, body: str) -> None:
        data = f"<!doctype html><html><body>{body}</body></html>".encode()
        request.send_response(status)
        request.send_header("Content-Type", "text/html; charset=utf-8")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)
