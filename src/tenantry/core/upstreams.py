"""Upstream MCP servers (gateway mode): what the control plane stores about one, and the naming rule.

An upstream's tools become grantable tools named ``<upstream>__<tool>``; its resources,
resource templates and prompts are granted under ``<upstream>__<name>`` the same way. Upstream
names are lowercase letters, digits and inner hyphens (no underscore), so the first ``__`` of an
exposed name always ends the upstream's name: two different ``(upstream, name)`` pairs never map
to the same exposed name. An exposed name must still be a valid MCP tool name (1-128 of
``[A-Za-z0-9_.-]``); an item whose exposed name would not be is reported, never renamed.

A resource's URI ``U`` (or a template's) is served as ``upstream://<upstream>/U``: the
upstream's name, which has no ``/``, is the URI's authority, so the exposed URI names exactly one
upstream, and ``U`` is the rest of it, unchanged (:func:`exposed_uri`, :func:`original_uri`).

Credentials are templates resolved per tenant when its session with the upstream starts:
``{secret:NAME}`` is the calling tenant's secret ``NAME``, ``{tenant}`` its id, ``{tenant_dir}``
its own directory (``<data_dir>/tenants/<id>/files``). ``{{`` and ``}}`` are literal braces.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from tenantry.core.errors import UsageError
from tenantry.core.ids import TOOL_NAME_PATTERN, validate_tenant_id

__all__ = [
    "UpstreamSpec",
    "Transport",
    "UPSTREAM_NAME_PATTERN",
    "SEPARATOR",
    "validate_upstream_name",
    "exposed_name",
    "exposed_uri",
    "original_uri",
    "RESOURCE_SCHEME",
    "MAX_EXPOSED_URI",
    "template_secrets",
    "render_template",
    "TemplateValues",
]

Transport = Literal["http", "stdio"]

UPSTREAM_NAME_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")
SEPARATOR = "__"
RESOURCE_SCHEME = "upstream"
MAX_EXPOSED_URI = 2048
"""The longest exposed resource URI or template (longer ones are reported, not served)."""
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,100}")
# Headers the gateway sets itself, or that would let a configured value smuggle a second request.
_RESERVED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "mcp-session-id", "mcp-protocol-version"}
)


def validate_upstream_name(name: str) -> str:
    """:raises UsageError: unless 1-40 lowercase letters, digits or inner hyphens."""
    if not isinstance(name, str) or UPSTREAM_NAME_PATTERN.fullmatch(name) is None:
        raise UsageError("upstream name must be 1-40 lowercase letters, digits or inner hyphens (no underscores)")
    return name


def exposed_name(upstream: str, tool: str) -> str | None:
    """The grantable name of ``tool`` of ``upstream``; ``None`` when it is not a valid MCP tool name."""
    name = f"{upstream}{SEPARATOR}{tool}"
    return name if TOOL_NAME_PATTERN.fullmatch(name) else None


def exposed_uri(upstream: str, uri: str) -> str:
    """The URI under which resource (or template) ``uri`` of ``upstream`` is served."""
    return f"{RESOURCE_SCHEME}://{upstream}/{uri}"


def original_uri(upstream: str, exposed: str) -> str | None:
    """The upstream's own URI behind ``exposed``; ``None`` unless ``exposed`` is one of ``upstream``'s."""
    prefix = exposed_uri(upstream, "")
    return exposed[len(prefix) :] if exposed.startswith(prefix) else None


@dataclass(frozen=True, slots=True)
class TemplateValues:
    """What a template may refer to, for one tenant."""

    tenant_id: str
    tenant_dir: str
    secret: Callable[[str], str]
    """The tenant's secret by name; raises :class:`~tenantry.core.errors.NotFound` for a missing one."""
    secret_values: frozenset[str] = frozenset()
    """The values of the secrets the upstream's templates name (redacted from what it writes to stderr)."""


def _parts(template: str) -> Iterable[tuple[str, str | None]]:
    """``(literal, placeholder)`` pieces; raises UsageError for a stray brace or an unknown placeholder."""
    position = 0
    for match in _PLACEHOLDER.finditer(template):
        literal = template[position : match.start()]
        token = match.group(0)
        position = match.end()
        if token in ("{{", "}}"):
            yield literal + token[0], None
            continue
        inner = match.group(1)
        if inner is None:
            raise UsageError(f"unbalanced brace in {template!r} (write {{{{ or }}}} for a literal brace)")
        if inner not in ("tenant", "tenant_dir") and not inner.startswith("secret:"):
            raise UsageError(f"unknown placeholder {{{inner}}}: use {{secret:NAME}}, {{tenant}} or {{tenant_dir}}")
        yield literal, inner
    yield template[position:], None


def template_secrets(template: str) -> list[str]:
    """The secret names ``template`` refers to. :raises UsageError: for a malformed template."""
    return [p.removeprefix("secret:") for _, p in _parts(template) if p is not None and p.startswith("secret:")]


def render_template(template: str, values: TemplateValues) -> str:
    """``template`` with its placeholders replaced for one tenant.

    :raises NotFound: a referenced secret is missing for this tenant.
    """
    out: list[str] = []
    for literal, placeholder in _parts(template):
        out.append(literal)
        if placeholder == "tenant":
            out.append(values.tenant_id)
        elif placeholder == "tenant_dir":
            out.append(values.tenant_dir)
        elif placeholder is not None:
            out.append(values.secret(placeholder.removeprefix("secret:")))
    return "".join(out)


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    """One upstream MCP server as the operator configured it (validated by :meth:`validated`)."""

    name: str
    transport: Transport
    url: str | None = None
    command: tuple[str, ...] = ()
    """For ``stdio``: the executable and its arguments (templates)."""
    headers: tuple[tuple[str, str], ...] = ()
    """For ``http``: ``(header, template)`` sent on every request of a tenant's session."""
    env: tuple[tuple[str, str], ...] = ()
    """For ``stdio``: ``(variable, template)`` of the tenant's process environment."""
    tenants: frozenset[str] | None = None
    """Tenants that may be granted its tools (``None``: every tenant)."""
    call_timeout: float = 30.0
    connect_timeout: float = 10.0
    tenant_agnostic: bool = False
    """``http`` only: one session shared by every tenant (no per-tenant credentials allowed)."""
    allow_private: bool = False
    """``http`` only: allow private, loopback and link-local addresses (refused by default: SSRF)."""
    max_tools: int = 1000
    created_at: int = 0

    def validated(self) -> UpstreamSpec:
        """:raises UsageError: naming what is wrong."""
        validate_upstream_name(self.name)
        if self.transport == "http":
            if not self.url or self.command or self.env:
                raise UsageError("an HTTP upstream takes --url (and --header), not --command or --env")
            if not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", self.url):
                raise UsageError("--url must be an http:// or https:// URL")
        elif self.transport == "stdio":
            if not self.command or self.url or self.headers:
                raise UsageError("a command upstream takes --command (and --env), not --url or --header")
            if self.tenant_agnostic:
                raise UsageError("--tenant-agnostic is for HTTP upstreams (a command upstream runs once per tenant)")
            if self.allow_private:
                raise UsageError("--allow-private is for HTTP upstreams")
        else:
            raise UsageError("transport must be http or stdio")
        for header, template in self.headers:
            if not _HEADER_NAME.fullmatch(header) or header.lower() in _RESERVED_HEADERS:
                raise UsageError(f"header name {header!r} is invalid or set by the gateway itself")
            if any(c in template for c in "\r\n\0"):
                raise UsageError(f"header {header!r}: a value may not contain line breaks")
            template_secrets(template)
        for variable, template in self.env:
            if not _ENV_NAME.fullmatch(variable):
                raise UsageError(f"environment variable name {variable!r} is invalid")
            template_secrets(template)
        for part in self.command:
            template_secrets(part)
        if self.tenant_agnostic and any(p for t in self._templates() for _, p in _parts(t)):
            raise UsageError(
                "a --tenant-agnostic upstream is shared by all tenants:"
                " it cannot use {secret:...}, {tenant} or {tenant_dir}"
            )
        if self.tenants is not None:
            for tenant in self.tenants:
                validate_tenant_id(tenant)
        if not (0 < self.call_timeout <= 3600 and 0 < self.connect_timeout <= 600):
            raise UsageError("timeouts must be positive (call at most 3600 s, connect at most 600 s)")
        if not 1 <= self.max_tools <= 10_000:
            raise UsageError("--max-tools must be between 1 and 10000")
        return self

    def _templates(self) -> list[str]:
        return [t for _, t in self.headers] + [t for _, t in self.env] + list(self.command) + [self.url or ""]

    def credential_secrets(self) -> list[str]:
        """Every secret name the upstream's templates refer to."""
        return sorted({name for template in self._templates() for name in template_secrets(template)})

    def available_to(self, tenant_id: str) -> bool:
        return self.tenants is None or tenant_id in self.tenants

    def to_json(self) -> str:
        return json.dumps(
            {
                "transport": self.transport,
                "url": self.url,
                "command": list(self.command),
                "headers": [list(h) for h in self.headers],
                "env": [list(e) for e in self.env],
                "tenants": None if self.tenants is None else sorted(self.tenants),
                "call_timeout": self.call_timeout,
                "connect_timeout": self.connect_timeout,
                "tenant_agnostic": self.tenant_agnostic,
                "allow_private": self.allow_private,
                "max_tools": self.max_tools,
            },
            separators=(",", ":"),
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, name: str, text: str, created_at: int) -> UpstreamSpec:
        data = json.loads(text)
        tenants = data.get("tenants")
        return cls(
            name=name,
            transport=data["transport"],
            url=data.get("url"),
            command=tuple(data.get("command") or ()),
            headers=tuple((str(k), str(v)) for k, v in data.get("headers") or ()),
            env=tuple((str(k), str(v)) for k, v in data.get("env") or ()),
            tenants=None if tenants is None else frozenset(tenants),
            call_timeout=float(data.get("call_timeout", 30.0)),
            connect_timeout=float(data.get("connect_timeout", 10.0)),
            tenant_agnostic=bool(data.get("tenant_agnostic", False)),
            allow_private=bool(data.get("allow_private", False)),
            max_tools=int(data.get("max_tools", 1000)),
            created_at=created_at,
        )
