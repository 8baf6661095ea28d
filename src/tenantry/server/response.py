"""Automatic response: acting on anomaly alerts without waiting for a human.

Configured per alert kind (``[response]`` in the settings): ``revoke_token`` revokes the
credential behind the event that raised the alert (its ``jti``, or the API key used
directly); ``halt_tenant`` switches the tenant's kill switch on. The change is made in the
control store, audited with the alert as its reason and ``auto-response`` as the actor, and
applied to this process's view at once (other replicas follow within a poll interval).
Alerts whose credential is unknown (e.g. refused before authentication) cannot be revoked;
that is logged.
"""

from __future__ import annotations

import asyncio
import logging

import anyio.to_thread

from tenantry.admin.actions import halt_tenant, revoke_api_key, revoke_tokens
from tenantry.audit.anomaly import AnomalyAlert
from tenantry.audit.events import AuditEvent
from tenantry.audit.sink import AuditSink
from tenantry.controlplane.directory import TenantDirectory
from tenantry.core.errors import TenantryError
from tenantry.core.settings import ResponseSettings

__all__ = ["AutomaticResponse", "AUTO_RESPONSE_ACTOR"]

logger = logging.getLogger("tenantry.response")

AUTO_RESPONSE_ACTOR = "tenantry:auto-response"


class AutomaticResponse:
    """An alert handler (see :meth:`~tenantry.audit.anomaly.AnomalyDetector.add_handler`)."""

    def __init__(
        self,
        policy: ResponseSettings,
        directory: TenantDirectory,
        audit: AuditSink,
        *,
        longest_lifetime: int,
    ) -> None:
        self._policy = policy
        self._directory = directory
        self._audit = audit
        self._lifetime = longest_lifetime
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, alert: AnomalyAlert) -> None:
        action = getattr(self._policy, alert.kind, "none")
        if action == "none" or alert.detail.get("actionable") is False:
            # e.g. a refused name that exists for another tenant: acting on it would let the
            # caller tell such names from names that exist nowhere.
            return
        task = asyncio.get_running_loop().create_task(self._respond(alert, action))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _respond(self, alert: AnomalyAlert, action: str) -> None:
        reason = f"automatic response to {alert.kind}: {alert.message}"
        store = self._directory.store
        try:
            event: AuditEvent
            if action == "halt_tenant":
                _, event = await anyio.to_thread.run_sync(
                    lambda: halt_tenant(store, alert.tenant_id, actor=AUTO_RESPONSE_ACTOR, reason=reason[:500])
                )
            else:
                principal = alert.principal
                if principal is None or principal.tenant_id != alert.tenant_id:
                    logger.warning(
                        "automatic response: no credential to revoke for this alert",
                        extra={"tenant_id": alert.tenant_id, "alert": alert.kind},
                    )
                    return
                if principal.credential_kind == "api_key":
                    _, event = await anyio.to_thread.run_sync(
                        lambda: revoke_api_key(
                            store,
                            principal.token_id,
                            actor=AUTO_RESPONSE_ACTOR,
                            longest_lifetime=self._lifetime,
                            reason=reason,
                        )
                    )
                else:
                    revoked = await anyio.to_thread.run_sync(
                        lambda: revoke_tokens(
                            store,
                            actor=AUTO_RESPONSE_ACTOR,
                            longest_lifetime=self._lifetime,
                            jti=principal.token_id,
                            tenant_id=principal.tenant_id,
                            reason=reason,
                        )
                    )
                    event = revoked.event
                event.subject = principal.subject
            await self._directory.sync(force=True)
        except TenantryError as exc:
            logger.error(
                "automatic response failed", extra={"tenant_id": alert.tenant_id, "alert": alert.kind, "code": exc.code}
            )
            return
        logger.warning("automatic response: %s", action, extra={"tenant_id": alert.tenant_id, "alert": alert.kind})
        try:
            await self._audit.record(event)
        except TenantryError as exc:
            logger.error(
                "automatic response taken but not audited", extra={"tenant_id": alert.tenant_id, "code": exc.code}
            )
