"""The sessionless 2026-07-28 era: routing headers, cache hints, and server-minted state bound to its principal.

* ``Mcp-Method`` / ``Mcp-Name`` that disagree with the body are refused (the SDK's check, pinned here);
* every list result says ``cacheScope: private`` with a ``ttlMs``;
* a tool's ``requestState`` (multi-round-trip) is sealed by the server and bound to the full
  principal (issuer, tenant, subject): replayed by another tenant, another subject of the same
  tenant, or tampered with, it is refused before the tool runs, while its owner's round trip works.
"""

from __future__ import annotations

from collections.abc import Iterator
from textwrap import dedent
from typing import Any

import httpx2
import pytest

from tests.support.rpc import modern_call
from tests.support.server import RunningServer, start_server

STEP_APP = dedent(
    '''
    import tenantry
    from mcp_types import ElicitRequest, ElicitRequestFormParams, InputRequiredResult

    app = tenantry.App("steps")

    @app.tool()
    async def confirm_step(ctx: tenantry.ToolContext) -> str | InputRequiredResult:
        """Asks once, then answers with the state it minted."""
        answers = ctx.client.input_responses or {}
        if "ok" not in answers or ctx.client.request_state is None:
            ask = ElicitRequest(params=ElicitRequestFormParams(
                message="Confirm?", requested_schema={"type": "object", "properties": {"ok": {"type": "boolean"}}},
            ))
            return InputRequiredResult(input_requests={"ok": ask}, request_state=f"minted-for-{ctx.tenant_id}")
        return f"{ctx.tenant_id} confirmed with {ctx.client.request_state}"

    @app.prompt()
    async def greeting(ctx: tenantry.ToolContext) -> str:
        return "hello"
    '''
)
ACCEPT = {"ok": {"action": "accept", "content": {"ok": True}}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("sessionless")
    (tmp / "steps_app.py").write_text(STEP_APP)
    running = start_server(tmp / "data", demo=False, app="steps_app:app", cwd=tmp)
    try:
        running.cli("tenant", "create", "acme", "--tools", "confirm_step")
        running.cli("tenant", "create", "globex", "--tools", "confirm_step")
        yield running
    finally:
        running.stop()


def call(server: RunningServer, token: str, extra: dict[str, Any] | None = None) -> httpx2.Response:
    return modern_call(server.mcp_url, token, "tools/call", {"name": "confirm_step", "arguments": {}, **(extra or {})})


def first_round(server: RunningServer, token: str) -> str:
    response = call(server, token)
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["resultType"] == "input_required", result
    state = result["requestState"]
    assert "minted-for" not in state, "the state is sealed, not the tool's plain text"
    return str(state)


# -- routing headers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{"Mcp-Name": "something_else"}, {"Mcp-Method": "tools/list"}, {"Mcp-Method": "prompts/get"}],
)
def test_routing_headers_that_disagree_with_the_body_are_refused(server: RunningServer, headers: dict) -> None:
    token = server.token("acme", "alice")
    assert call(server, token).status_code == 200  # positive control: headers that agree
    response = modern_call(
        server.mcp_url, token, "tools/call", {"name": "confirm_step", "arguments": {}}, headers=headers
    )
    assert response.status_code == 400, response.text
    assert "result" not in response.json()
    assert "header" in response.text.lower()


# -- cache hints -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["tools/list", "prompts/list"])
def test_list_results_are_private_with_a_ttl(server: RunningServer, method: str) -> None:
    result = modern_call(server.mcp_url, server.token("acme", "alice"), method, {}).json()["result"]
    assert result["cacheScope"] == "private"
    assert isinstance(result["ttlMs"], int) and result["ttlMs"] >= 0


# -- requestState ------------------------------------------------------------------------------


def test_request_state_completes_for_its_owner(server: RunningServer) -> None:
    token = server.token("acme", "alice")
    state = first_round(server, token)
    done = call(server, token, {"inputResponses": ACCEPT, "requestState": state})
    assert done.status_code == 200, done.text
    assert "acme confirmed with minted-for-acme" in done.text


@pytest.mark.parametrize(
    ("thief_tenant", "thief_subject"),
    [("globex", "alice"), ("globex", "mallory"), ("acme", "mallory")],
)
def test_request_state_of_one_principal_is_useless_to_another(
    server: RunningServer, thief_tenant: str, thief_subject: str
) -> None:
    owner = server.token("acme", "alice")
    state = first_round(server, owner)
    thief = server.token(thief_tenant, thief_subject)
    stolen = call(server, thief, {"inputResponses": ACCEPT, "requestState": state})
    assert "confirmed" not in stolen.text and "minted-for-acme" not in stolen.text, stolen.text
    assert "error" in stolen.json(), stolen.text
    # The owner can still finish (the refusal consumed nothing).
    done = call(server, owner, {"inputResponses": ACCEPT, "requestState": state})
    assert "acme confirmed with minted-for-acme" in done.text


def test_tampered_request_state_is_refused(server: RunningServer) -> None:
    token = server.token("acme", "alice")
    state = first_round(server, token)
    flipped = state[:-3] + ("A" if state[-3] != "A" else "B") + state[-2:]
    refused = call(server, token, {"inputResponses": ACCEPT, "requestState": flipped})
    assert "confirmed" not in refused.text and "error" in refused.json(), refused.text
    forged = call(server, token, {"inputResponses": ACCEPT, "requestState": "minted-for-acme"})
    assert "confirmed" not in forged.text and "error" in forged.json(), forged.text
