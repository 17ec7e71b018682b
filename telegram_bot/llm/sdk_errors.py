"""The OpenAI SDK's exceptions, translated into ours (errors.py), with the log line that tells
the owner what to fix. The SDK is imported inside `translate`, as in client.py: it is imported
lazily so start-up does not wait for it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import (
    ModelAuthError,
    ModelError,
    ModelNotFound,
    ModelRateLimited,
    ModelTimeout,
    ModelUnavailable,
    VisionRefused,
)
from .overflow import CONTEXT_MARKERS, overflow
from .vision import rejects_images

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)


def translate(exc: BaseException, settings: Settings, *, images: bool = False) -> ModelError:
    """Turns an SDK or transport exception into one of ours, logging what the owner must fix.

    With `images`, an error that says the model takes none becomes VisionRefused."""
    import openai

    if isinstance(exc, ModelError):
        return exc
    if images and isinstance(exc, openai.APIStatusError):
        refused = rejects_images(exc.status_code, str(exc))
        if refused and not any(m in str(exc).lower() for m in CONTEXT_MARKERS):
            return VisionRefused()
        if refused is False:
            log.warning("The model server could not read an image: %s", exc)
            return ModelError()
    if isinstance(exc, openai.APITimeoutError):
        return ModelTimeout()
    if isinstance(exc, openai.APIConnectionError):
        return ModelUnavailable()
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        log.error(
            "The model server refused the credentials (HTTP %s): check OPENAI_API_KEY "
            "and OPENAI_BASE_URL (%s)",
            exc.status_code,
            settings.openai_base_url,
        )
        return ModelAuthError()
    if isinstance(exc, openai.RateLimitError):
        return ModelRateLimited()
    if isinstance(exc, openai.NotFoundError):
        log.error(
            "The model server has no model %r at %s: check OPENAI_MODEL",
            settings.openai_model,
            settings.openai_base_url,
        )
        return ModelNotFound()
    if isinstance(exc, openai.APIStatusError):
        message = str(exc).lower()
        if exc.status_code in (400, 413) and any(m in message for m in CONTEXT_MARKERS):
            return overflow(exc.body, message)
        if exc.status_code >= 500:
            return ModelUnavailable()
        log.error("The model server rejected the request (HTTP %s): %s", exc.status_code, exc)
        return ModelError()
    if isinstance(exc, openai.APIError):
        return ModelUnavailable()
    return ModelError()
