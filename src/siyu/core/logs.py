"""Logging set-up shared by every process. Secrets never reach the logs:

- httpx/httpcore would log full request URLs at INFO, and WeChat's token endpoints carry secrets in
  the query string (`gettoken?corpsecret=…`): their loggers are held at WARNING;
- a filter on every root handler masks `secret=`, `corpsecret=`, `access_token=`, `password=`-style
  values, and the password in a server URL (`redis://:…@host`), in whatever is logged anyway.
"""

from __future__ import annotations

import logging
import re

_SECRET_PARAM = re.compile(
    r"(?i)\b(secret|corpsecret|appsecret|app_secret|access_token|password|aes_key|encodingaeskey)"
    r"(\"?\s*[=:]\s*\"?)([^&\s\"',}]+)"
)


# A server URL with its password (the embedded Valkey's REDIS_URL has one): keep the rest of the URL.
_URL_PASSWORD = re.compile(r"(?i)\b((?:redis|rediss|postgres|postgresql)://[^:/@\s]*:)([^@\s]+)(@)")


def redact(text: str) -> str:
    text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}***{m.group(3)}", text)
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def quiet_http_clients() -> None:
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_http_clients()
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
