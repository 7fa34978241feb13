"""Every WeChat error a rep or an admin can meet has words and advice in the one table (`siyu.wechat.errors`),
and says whether trying again can help."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from siyu.core import i18n
from siyu.simulator.api import ERRMSG
from siyu.wechat import client, errors, outbound

SRC = Path(__file__).resolve().parents[3] / "src" / "siyu"


def _client_codes() -> set[int]:
    """The errcodes wechat/client.py sorts into its sets (busy, token, rate limits, not allowed, config)."""
    return set(client.TOKEN_ERRORS | client.NOT_ALLOWED | client.RATE_LIMITED | client.CONFIG_PROBLEMS | client.BUSY
               | set(client.WeChatNotAllowed.REASONS))


def _client_reasons() -> set[str]:
    """Every `reason` a WeChatError of the client (or the ledger) can carry."""
    found = set(client.WeChatNotAllowed.REASONS.values()) | {"not_allowed"}
    for cls in (client.WeChatBusy, client.WeChatUnreachable, client.WeChatTokenUnavailable,
                client.WeChatOutcomeUnknown, client.WeChatRateLimited, client.WeChatConfigProblem):
        found.add(cls.reason)
    return found


@pytest.mark.parametrize("code", sorted(_client_codes()))
def test_every_errcode_the_client_knows_is_explained(code: int) -> None:
    found = errors.explain(code)
    assert found is not errors.UNKNOWN, f"errcode {code} (wechat/client.py) has no words in siyu.wechat.errors"
    assert found.summary and found.advice


@pytest.mark.parametrize("code", sorted(ERRMSG))
def test_every_errcode_the_simulator_answers_is_explained(code: int) -> None:
    assert errors.explain(code) is not errors.UNKNOWN, f"the simulator answers {code}; Siyu has no words for it"


def test_every_reason_the_client_and_the_ledger_give_is_explained() -> None:
    ledger_reasons = set()
    for node in ast.walk(ast.parse((SRC / "wechat" / "outbound.py").read_text(encoding="utf-8"))):
        if isinstance(node, ast.keyword) and node.arg == "reason" and isinstance(node.value, ast.Constant):
            ledger_reasons.add(node.value.value)
    missing = sorted(r for r in (_client_reasons() | ledger_reasons) - {"not_allowed"} if r not in errors.REASONS)
    assert missing == []
    assert outbound.FINAL  # the module the reasons were read from is the ledger


def test_retrying_is_offered_only_where_it_can_help() -> None:
    for code in (-1, 45009, 45011):
        assert errors.explain(code).retry, code
    for reason in ("unreachable", "token_unavailable", "gave_up", "busy", "rate_limited"):
        assert errors.explain(None, reason).retry, reason
    for code in (45015, 45047, 43004, 43101, 95018, 95001):
        found = errors.explain(code)
        assert not found.retry and found.alternatives, code
    for code in (40096, 40003, 84061, 40007, 40164, 48001):
        assert not errors.explain(code).retry, code
    assert not errors.of_stored("outcome_unknown").retry  # "Send again" is a person's choice, not a retry


def test_stored_errors_and_unknown_codes_read_in_words() -> None:
    assert errors.of_stored("40096") is errors.ERRCODES[40096]
    assert errors.of_stored("-1") is errors.ERRCODES[-1]
    assert errors.of_stored("unreachable") is errors.REASONS["unreachable"]
    token = i18n.set_locale("en")
    try:
        unknown = errors.describe_stored("99999")
        assert "99999" in unknown.summary and unknown.advice
        words = errors.describe_stored("40096")
        assert "error 40096" not in words.summary and "WeCom" in words.summary
        i18n.set_locale("zh_CN")
        assert errors.describe_stored("45015").summary != errors.ERRCODES[45015].summary  # translated
    finally:
        i18n._current.reset(token)


def test_credentials_read_a_refused_token_as_a_wrong_secret() -> None:
    assert errors.explain(40001, context="credentials").summary == "The AppSecret is wrong."
    assert "token" in errors.explain(40001).summary


def test_the_table_stays_pure_data() -> None:
    tree = ast.parse((SRC / "wechat" / "errors.py").read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {m for m in imported if m and m.startswith("siyu")} <= {"siyu.core", "siyu.core.i18n"}
