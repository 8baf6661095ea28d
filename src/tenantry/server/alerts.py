"""Delivering anomaly alerts: to the tenant's audit stream, the log, and a signed webhook.

Webhook delivery never blocks a tool call: alerts go into a bounded queue that a background
task drains, POSTing JSON with an HMAC-SHA256 signature over ``timestamp.body``::

    X-Tenantry-Timestamp: 1795694483
    X-Tenantry-Signature: sha256=<hex HMAC(secret, b"1795694483." + body)>

Failures are retried with exponential backoff (0.5 s, 1 s, 2 s, ... up to ``attempts``);
an alert that still cannot be delivered is logged and dropped.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from typing import Any

import anyio
import httpx2

from tenantry.audit.anomaly import AnomalyAlert
from tenantry.audit.events import AuditEvent, iso_timestamp
from tenantry.audit.sink import AuditSink
from tenantry.core.errors import TenantryError

__all__ = ["WebhookNotifier", "AlertRecorder", "alert_payload", "sign_payload"]

logger = logging.getLogger("tenantry.alerts")


def alert_payload(alert: AnomalyAlert) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex,
        "kind": alert.kind,
        "tenant_id": alert.tenant_id,
        "message": alert.message,
        "detail": alert.detail,
        "timestamp": iso_timestamp(alert.created),
    }


def sign_payload(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class AlertRecorder:
    """Writes each alert into the tenant's audit stream and as a structured warning log line."""

    def __init__(self, audit: AuditSink) -> None:
        self._audit = audit
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, alert: AnomalyAlert) -> None:
        logger.warning("anomaly alert: %s", alert.message, extra={"tenant_id": alert.tenant_id, "alert": alert.kind})
        task = asyncio.get_running_loop().create_task(self._record(alert))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record(self, alert: AnomalyAlert) -> None:
        try:
            await self._audit.record(
                AuditEvent(
                    event_type="anomaly_alert",
                    tenant_id=alert.tenant_id,
                    result_status="ok",
                    reason=f"{alert.kind}: {alert.message}",
                    detail=dict(alert.detail),
                    created=alert.created,
                )
            )
        except TenantryError:
            logger.error("could not audit an anomaly alert", extra={"tenant_id": alert.tenant_id})


class WebhookNotifier:
    """Queue-fed webhook sender; ``__call__`` never blocks and never raises."""

    def __init__(self, url: str, secret: bytes, *, attempts: int = 5, queue_size: int = 1000) -> None:
        self._url = url
        self._secret = secret
        self._attempts = attempts
        self._queue: asyncio.Queue[AnomalyAlert] = asyncio.Queue(maxsize=queue_size)
        self.delivered = 0
        self.dropped = 0

    def __call__(self, alert: AnomalyAlert) -> None:
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            self.dropped += 1
            logger.error("alert webhook queue full; alert dropped", extra={"tenant_id": alert.tenant_id})

    async def run(self) -> None:
        # Loading the system's CAs takes tens of milliseconds of CPU: off the event loop.
        tls = await anyio.to_thread.run_sync(httpx2.create_ssl_context)
        async with httpx2.AsyncClient(timeout=10, verify=tls) as client:
            while True:
                alert = await self._queue.get()
                await self._deliver(client, alert)

    async def _deliver(self, client: httpx2.AsyncClient, alert: AnomalyAlert) -> None:
        body = json.dumps(alert_payload(alert), separators=(",", ":"), sort_keys=True).encode()
        delay = 0.5
        for attempt in range(1, self._attempts + 1):
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "tenantry-alerts",
                "X-Tenantry-Timestamp": timestamp,
                "X-Tenantry-Signature": sign_payload(self._secret, timestamp, body),
            }
            try:
                response = await client.post(self._url, content=body, headers=headers)
                if response.status_code < 300:
                    self.delivered += 1
                    return
                problem = f"HTTP {response.status_code}"
            except httpx2.HTTPError as exc:
                problem = type(exc).__name__
            if attempt < self._attempts:
                logger.warning("alert webhook attempt %d failed (%s); retrying", attempt, problem)
                await anyio.sleep(delay)
                delay *= 2
            else:
                self.dropped += 1
                logger.error(
                    "alert webhook gave up after %d attempts (%s)",
                    attempt,
                    problem,
                    extra={"tenant_id": alert.tenant_id, "alert": alert.kind},
                )
