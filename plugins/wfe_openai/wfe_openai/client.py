"""The OpenAI client an adapter builds: from its settings, or OPENAI_API_KEY and OPENAI_BASE_URL."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wfcore import AdapterError

from .checks import _check_api_key, _check_base_url, _check_header_variables
from .redaction import _masked_url

if TYPE_CHECKING:
    from openai import AsyncOpenAI

logger = logging.getLogger("wfe_openai")

#: The server the SDK uses when no other is configured.
_DEFAULT_BASE_URL = "https://api.openai.com/v1"

# Warnings about OPENAI_API_BASE already logged: every client built would repeat them.
_warned: set[str] = set()


def _api_base_ignored() -> str | None:
    """What to say when ``OPENAI_API_BASE`` is set and ``OPENAI_BASE_URL`` is not; or None.

    The pre-1.0 SDK and LangChain read ``OPENAI_API_BASE``; the SDK now reads only
    ``OPENAI_BASE_URL``, so the requests (and the task data in them) would go to
    api.openai.com without a word.
    """
    legacy = (os.environ.get("OPENAI_API_BASE") or "").strip()
    if not legacy or (os.environ.get("OPENAI_BASE_URL") or "").strip():
        return None
    return (
        f"OPENAI_API_BASE={_masked_url(legacy)!r} is ignored: the openai SDK reads "
        "OPENAI_BASE_URL, so agentic phases go to api.openai.com (set OPENAI_BASE_URL "
        "instead)"
    )


def _build_client(
    api_key: str | None,
    base_url: str | None,
    max_retries: int | None,
    redact: Callable[[str], str],
) -> AsyncOpenAI:
    """A new client; fails the attempt, saying why, when the key or the server is unusable.

    ``redact`` masks credentials in the message of a client that cannot be created.
    """
    key = api_key or os.environ.get("OPENAI_API_KEY")
    if not key:
        raise AdapterError(
            "OPENAI_API_KEY is not set: export it (any non-empty value for a local "
            "server that ignores keys), or pass api_key= or client= to OpenAIAgentAdapter"
        )
    if not api_key:
        _check_api_key(key, "OPENAI_API_KEY", AdapterError)
    _check_header_variables(AdapterError)
    import openai

    kwargs: dict[str, Any] = {"api_key": key}
    if base_url:
        kwargs["base_url"] = base_url
    else:
        ignored = _api_base_ignored()
        if ignored is not None and ignored not in _warned:
            _warned.add(ignored)
            logger.warning("%s", ignored)
        env_url = os.environ.get("OPENAI_BASE_URL")
        if env_url is not None and not env_url.strip():
            # "OPENAI_BASE_URL=" in a .env file means no server of one's own; the
            # SDK would take the empty text as the URL (openai-python#2927).
            kwargs["base_url"] = _DEFAULT_BASE_URL
        elif env_url is not None:
            _check_base_url(env_url, "OPENAI_BASE_URL", AdapterError)
    if max_retries is not None:
        kwargs["max_retries"] = max_retries
    kwargs["http_client"] = _whole_reply_client_class()()
    try:
        return openai.AsyncOpenAI(**kwargs)
    except openai.OpenAIError as exc:
        raise AdapterError(redact(f"cannot create the OpenAI client: {exc}")) from None


_whole_reply_class: type[Any] | None = None


def _whole_reply_client_class() -> type[Any]:
    """The SDK's own HTTP client class, with a request's timeout bounding its whole reply.

    The HTTP library's read timeout bounds each wait for more bytes, not the reply: a
    server that sends its body a little at a time (some proxies send blanks to keep a
    slow, non-streamed reply's connection open) would hold a call far past the
    ``timeout`` an operator set as "seconds to wait for each reply". Here the whole
    exchange, from connecting to the last byte of the reply, gets the connect timeout
    and the read timeout (what a server that sends nothing can take already, so a
    connection that cannot be made still times out as one), and running out of it is
    the library's own read timeout, which the SDK retries and reports as for a
    server that sends nothing.
    """
    global _whole_reply_class
    if _whole_reply_class is not None:
        return _whole_reply_class
    import openai

    base: type[Any] = openai.DefaultAsyncHttpxClient
    # httpx or httpx2, whichever this SDK is built on: its ReadTimeout is what the SDK
    # takes for a request that timed out.
    library = next(c for c in base.__mro__ if not c.__module__.startswith("openai"))
    read_timeout = importlib.import_module(library.__module__.split(".")[0]).ReadTimeout

    class WholeReplyClient(base):  # type: ignore[misc]
        async def send(self, request: Any, **kwargs: Any) -> Any:
            limit = _reply_limit(request)
            if limit is None or kwargs.get("stream"):
                return await super().send(request, **kwargs)
            try:
                return await asyncio.wait_for(super().send(request, **kwargs), limit)
            except asyncio.TimeoutError:
                raise read_timeout(f"no whole reply within {limit:g} s", request=request) from None

    _whole_reply_class = WholeReplyClient
    return WholeReplyClient


def _reply_limit(request: Any) -> float | None:
    """The seconds a request's whole exchange may take: its connect timeout and its
    read timeout (from the ``timeout`` of the client or the request); None when it
    has no read timeout."""
    timeout = request.extensions.get("timeout") or {}
    read, connect = timeout.get("read"), timeout.get("connect")
    if not isinstance(read, (int, float)):
        return None
    return float(read) + (float(connect) if isinstance(connect, (int, float)) else 0.0)
