"""Masking credentials (the API key, and passwords or keys in URLs) in what the adapter shows."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

# Credentials a server URL can carry: "user:password@" before the host, and keys in
# the query (Azure-style api-key=, key=, SAS signatures). Error messages name the
# server, so these are masked wherever a URL shows.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s@]+@")
_URL_SECRET_PARAM = re.compile(
    r"(?P<name>[?&](?:api[-_]?key|key|token|access[-_]token|secret|password|sig|signature)=)"
    r"[^&#\s)]+",
    re.IGNORECASE,
)
# Credentials at the start of a URL, with or without a scheme ("user:pw@host").
_LEADING_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)?[^/?#@]*@")


def _without_secrets(text: str, secrets: Iterable[str]) -> str:
    """``text`` without the given secrets and without credentials in any URL."""
    for secret in sorted(_secret_forms(secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _URL_USERINFO.sub(r"\g<scheme>***@", text)
    return _URL_SECRET_PARAM.sub(r"\g<name>***", text)


def _secret_forms(secrets: Iterable[str]) -> set[str]:
    """Each secret as it may show in an error text: as is, stripped, and escaped.

    Errors often quote a value with repr(), so a key with a newline shows as
    ``sk-...\\n`` and would slip past a search for the key itself.
    """
    forms: set[str] = set()
    for secret in secrets:
        forms.update(
            (
                secret,
                secret.strip(),
                repr(secret)[1:-1],
                json.dumps(secret)[1:-1],
                repr(secret.encode("utf-8", "backslashreplace"))[2:-1],
            )
        )
    # Very short forms would mask unrelated text.
    return {form for form in forms if len(form) >= 4}


def _masked_url(url: str) -> str:
    """``url`` with credentials at its start or in its query masked, for an error message."""
    return _URL_SECRET_PARAM.sub(r"\g<name>***", _LEADING_USERINFO.sub(r"\g<scheme>***@", url))
