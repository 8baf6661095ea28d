"""A header-injecting reverse proxy for the conformance suite, which cannot send a bearer token.

Adds ``Authorization: Bearer <token>`` to every request and forwards everything else
(including ``Host`` and ``Origin``, so DNS-rebinding checks still see what the suite sent),
streaming responses back (SSE included). Test-only; binds 127.0.0.1.

    python -m tests.conformance.proxy --listen-port 4100 --target http://127.0.0.1:8750 --token-file tok
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from tests.support import web

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length"}


def build(target: str, token: str) -> Starlette:
    client = web.AsyncClient(base_url=target, timeout=httpx2.Timeout(60, read=None))

    async def forward(request: Request) -> StreamingResponse:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP | {"authorization"}]
        headers.append(("authorization", f"Bearer {token}"))
        upstream = client.build_request(
            request.method, request.url.path, params=request.query_params, headers=headers, content=await request.body()
        )
        response = await client.send(upstream, stream=True)

        async def body() -> AsyncIterator[bytes]:
            async for chunk in response.aiter_raw():
                yield chunk

        passed = {k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP}
        return StreamingResponse(
            body(), status_code=response.status_code, headers=passed, background=BackgroundTask(response.aclose)
        )

    return Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "POST", "DELETE", "PUT", "PATCH"])])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--token-file", type=Path, required=True)
    args = parser.parse_args()
    app = build(args.target, args.token_file.read_text().strip())
    uvicorn.run(app, host="127.0.0.1", port=args.listen_port, log_level="warning", server_header=False)


if __name__ == "__main__":
    main()
