from __future__ import annotations

from tenantry.core.identity import Principal
from tenantry.policy.acl import decide_tool_call, effective_tools


def principal(tools: set[str]) -> Principal:
    return Principal(
        issuer="https://iss",
        tenant_id="acme",
        subject="a",
        allowed_tools=frozenset(tools),
        token_id="j",
        expires_at=2,
        issued_at=1,
    )


def test_effective_tools_is_the_intersection_of_token_grant_and_registry() -> None:
    p = principal({"a", "b", "c", "x"})
    assert effective_tools(p, {"a", "b", "y"}, {"a", "c", "y", "z"}) == {"a"}


def test_token_cannot_widen_the_tenant_grant() -> None:
    p = principal({"a", "secret_tool"})
    decision = decide_tool_call("secret_tool", p, {"a"}, {"a", "secret_tool"})
    assert not decision.allowed
    assert decision.reason == "not_granted_to_tenant"


def test_each_refusal_names_its_reason_for_the_audit() -> None:
    p = principal({"a"})
    assert decide_tool_call("nope", p, {"a"}, {"a"}).reason == "not_registered"
    assert decide_tool_call("a", p, {"b"}, {"a"}).reason == "not_granted_to_tenant"
    assert decide_tool_call("b", p, {"b"}, {"b"}).reason == "not_in_token"
    assert decide_tool_call("a", p, None, {"a"}).reason == "tenant_unknown"
    assert decide_tool_call("a", p, {"a"}, {"a"}).allowed
