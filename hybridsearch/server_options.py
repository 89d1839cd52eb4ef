"""Settings of the HTTP server alone (the library never reads them).

| variable | default | meaning |
|---|---|---|
| HYBRIDSEARCH_REQUIRE_AUTH | 0 | 1: keys are required even before one exists |
| HYBRIDSEARCH_MAX_BODY_BYTES | 16777216 | largest request body; a larger one gets 413 |

Keys are required as soon as one exists in the database, whatever REQUIRE_AUTH says.
16 MiB holds an ingest batch of a thousand 10-KB documents or eight documents at the
2-million-character limit; a request's body is held in memory and parsed whole (its JSON
objects take several times its size), so bigger loads should come as more requests.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from hybridsearch.errors import ConfigurationError

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off"}


@dataclass(frozen=True)
class ServerOptions:
    require_auth: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: ``serve --insecure``: serving without keys on purpose, logged on every start
    insecure: bool = False

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, insecure: bool = False
    ) -> ServerOptions:
        env = os.environ if env is None else env
        flag = env.get("HYBRIDSEARCH_REQUIRE_AUTH", "").strip().lower()
        if flag not in _TRUE | _FALSE:
            raise ConfigurationError(f"HYBRIDSEARCH_REQUIRE_AUTH={flag!r}: use 1 or 0")
        raw = env.get("HYBRIDSEARCH_MAX_BODY_BYTES", "")
        size = DEFAULT_MAX_BODY_BYTES
        if raw:
            if not raw.isdigit() or int(raw) == 0:
                raise ConfigurationError(
                    f"HYBRIDSEARCH_MAX_BODY_BYTES={raw!r} is not a positive number of bytes"
                )
            size = int(raw)
        return cls(require_auth=flag in _TRUE, max_body_bytes=size, insecure=insecure)
