"""A small Docker token-auth issuer on loopback, for the registry's `auth: token:` mode.

Signs RS256 JWTs with a self-signed certificate; the certificate travels in the JWT header's
`x5c`, and the registry trusts it through `rootcertbundle`. Credentials are checked with Basic
auth; anonymous callers get `pull` only, known users what they ask for.
"""

from __future__ import annotations

import base64
import datetime
import json
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

SERVICE = "test-registry"
ISSUER = "test-issuer"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    def __init__(self, root: Path, *, users: dict[str, str] | None = None, anonymous: bool = True,
                 lifetime: int = 300, service: str = SERVICE) -> None:
        self.users = dict(users or {})
        self.service = service  # the challenge's `service`, and the tokens' audience
        self.anonymous = anonymous
        self.lifetime = lifetime
        self.requests: list[dict[str, Any]] = []  # {user, scopes} of each token request
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        root.mkdir(parents=True, exist_ok=True)
        self.cert_path = root / "token-issuer.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self._server.server_address[1]
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def registry_auth(self) -> dict[str, Any]:
        """The `auth:` section of a distribution config that trusts this issuer."""
        return {"token": {"realm": self.realm, "service": self.service, "issuer": ISSUER,
                          "rootcertbundle": str(self.cert_path)}}

    def start(self) -> TokenIssuer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> TokenIssuer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def token(self, user: str | None, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = [a for a in actions.split(",") if a]
            granted = wanted if user else [a for a in wanted if a == "pull"]
            if kind == "repository" and granted:
                access.append({"type": "repository", "name": name, "actions": granted})
        now = int(time.time())
        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        claims = {"iss": ISSUER, "sub": user or "", "aud": self.service, "exp": now + self.lifetime, "nbf": now - 10,
                  "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(signature)}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                user = None
                header = self.headers.get("Authorization", "")
                if header.startswith("Basic "):
                    name, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    if issuer.users.get(name) != password:
                        return self._send(401, {"details": "bad credentials"})
                    user = name
                elif not issuer.anonymous:
                    return self._send(401, {"details": "credentials required"})
                scopes = query.get("scope", [])
                issuer.requests.append({"user": user, "scopes": scopes, "service": query.get("service", [""])[0]})
                token = issuer.token(user, scopes)
                self._send(200, {"token": token, "access_token": token, "expires_in": issuer.lifetime,
                                 "issued_at": datetime.datetime.now(datetime.UTC).isoformat()})

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
