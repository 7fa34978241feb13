"""Secrets never reach the logs."""

from __future__ import annotations

import logging

import pytest

from siyu.core.logs import RedactingFilter, redact


def test_redact_masks_secret_query_parameters_and_fields() -> None:
    line = "GET /cgi-bin/gettoken?corpid=ww00112233445566aa&corpsecret=SuperSecretValue123 HTTP/1.1"
    assert "SuperSecretValue123" not in redact(line)
    assert "corpid=ww00112233445566aa" in redact(line)
    assert "S3cr3t" not in redact('{"appid": "wx1", "secret": "S3cr3t"}')
    assert "hunter2hunter2" not in redact("password=hunter2hunter2")
    assert redact("nothing to hide") == "nothing to hide"


def test_filter_rewrites_records_with_secrets(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("siyu.test.redaction")
    caplog.handler.addFilter(RedactingFilter())
    try:
        with caplog.at_level(logging.INFO, logger="siyu.test.redaction"):
            logger.info("calling %s", "https://x/cgi-bin/token?appid=wx1&secret=abcdef123456")
        assert "abcdef123456" not in caplog.text
        assert "secret=***" in caplog.text
    finally:
        caplog.handler.filters.clear()


def test_http_client_loggers_are_held_at_warning() -> None:
    import siyu.wechat.connection  # noqa: F401  (importing it quiets httpx)

    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
    assert logging.getLogger("httpcore").getEffectiveLevel() >= logging.WARNING
