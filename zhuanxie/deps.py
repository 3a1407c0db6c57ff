"""What the server's routes share: the app state, the API key check, and API errors.

Errors leave the server in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``,
so OpenAI clients raise them with our message.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from starlette.exceptions import HTTPException

from zhuanxie.batchjobs import JobManager
from zhuanxie.metrics import Metrics
from zhuanxie.service import Service
from zhuanxie.settings import ServerSettings

# OpenAI's error types, by status.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
    504: "timeout_error",
}


class ApiError(HTTPException):
    """An error answered in OpenAI's shape; ``param`` names the request field at fault."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status_code, message, dict(headers) if headers else None)
        self.message = message
        self.param = param
        self.code = code


def error_body(
    status_code: int, message: str, param: str | None = None, code: str | None = None
) -> dict[str, dict[str, str | None]]:
    kind = ERROR_TYPES.get(
        status_code, "server_error" if status_code >= 500 else "invalid_request_error"
    )
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclass
class AppState:
    """The server's parts, for its routes and the Web UI (``app.state.zhuanxie``).

    ``services`` maps each served model's id to the one ``Service`` (engine) behind it; the
    first is the default. ``jobs`` runs batch jobs on the same services.
    """

    settings: ServerSettings
    services: dict[str, Service]
    jobs: JobManager
    metrics: Metrics
    ready: bool = field(default=False)
    """True between startup (jobs resumed) and shutdown."""

    @property
    def models(self) -> list[str]:
        return list(self.services)

    @property
    def default_model(self) -> str:
        return next(iter(self.services))

    def resolve_model(self, requested: str | None) -> str:
        """The served model for a request: the one named, else the default (OpenAI clients
        send names such as ``whisper-1``, which all mean "the server's model")."""
        return requested if requested in self.services else self.default_model


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.zhuanxie
    return state


State = Annotated[AppState, Depends(get_state)]


def require_api_key(request: Request, state: State) -> None:
    """Refuse the request unless it carries ``Authorization: Bearer <key>`` (when a key is set)."""
    key = state.settings.api_key
    if key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(
        token.strip().encode(), key.get_secret_value().encode()
    ):
        raise ApiError(
            401,
            "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
