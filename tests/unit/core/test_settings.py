"""Settings: the secret key is required in production; development makes one once and keeps it.

Every test calls `load_settings()` (never the cached `get_settings()`) with its own environment, from a
directory without a `.env` file.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from siyu.core.errors import ConfigurationError
from siyu.core.settings import load_settings

STRONG_KEY = "p" * 48


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    monkeypatch.chdir(tmp_path)  # no .env from the repository
    for name in ("SIYU_SECRET_KEY", "SIYU_PREVIOUS_SECRET_KEYS", "SIYU_PUBLIC_BASE_URL", "SIYU_PORT", "SIYU_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SIYU_DATA_DIR", str(tmp_path / "data"))
    return monkeypatch


def test_production_without_a_secret_key_refuses_to_start(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("SIYU_ENV", "production")
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    message = str(info.value)
    assert "SIYU_SECRET_KEY is not set" in message
    assert "secrets.token_urlsafe" in message  # says how to make one
    assert not (tmp_path / "data" / "secret_key").exists()  # and does not invent one


def test_production_with_a_blank_secret_key_refuses_to_start(env: pytest.MonkeyPatch) -> None:
    env.setenv("SIYU_ENV", "production")
    env.setenv("SIYU_SECRET_KEY", "   ")
    with pytest.raises(ConfigurationError, match="SIYU_SECRET_KEY"):
        load_settings()


@pytest.mark.parametrize("siyu_env", ["production", "development"])
def test_a_short_secret_key_is_refused(env: pytest.MonkeyPatch, siyu_env: str) -> None:
    env.setenv("SIYU_ENV", siyu_env)
    env.setenv("SIYU_SECRET_KEY", "x" * 31)
    with pytest.raises(ConfigurationError, match="at least 32 characters"):
        load_settings()


def test_production_with_a_secret_key(env: pytest.MonkeyPatch) -> None:
    env.setenv("SIYU_ENV", "production")
    env.setenv("SIYU_SECRET_KEY", STRONG_KEY)
    env.setenv("SIYU_PREVIOUS_SECRET_KEYS", " old-one , ,old-two ")
    s = load_settings()
    assert s.secret_key == STRONG_KEY
    assert s.previous_secret_keys == ("old-one", "old-two")
    assert not s.is_development


def test_development_generates_a_key_once_and_reuses_it(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("SIYU_ENV", "development")
    first = load_settings()
    key_file = tmp_path / "data" / "secret_key"
    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(first.secret_key) >= 32
    assert key_file.read_text().strip() == first.secret_key
    second = load_settings()
    assert second.secret_key == first.secret_key
    # Another data dir is another key.
    env.setenv("SIYU_DATA_DIR", str(tmp_path / "elsewhere"))
    assert load_settings().secret_key != first.secret_key


def test_development_keeps_previous_keys_from_the_data_dir(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("SIYU_ENV", "development")
    data = tmp_path / "data"
    data.mkdir()
    (data / "secret_key.previous").write_text("older-key\n\nold-key\n")
    s = load_settings()
    assert s.previous_secret_keys == ("older-key", "old-key")


def test_an_explicit_key_wins_in_development(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("SIYU_ENV", "development")
    env.setenv("SIYU_SECRET_KEY", STRONG_KEY)
    assert load_settings().secret_key == STRONG_KEY
    assert not (tmp_path / "data" / "secret_key").exists()


def test_the_environment_wins_over_dotenv(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("SIYU_ENV", "production")
    (tmp_path / ".env").write_text(f"SIYU_SECRET_KEY={'d' * 40}\nSIYU_PORT=9100\n")
    env.setenv("SIYU_PORT", "9200")
    s = load_settings()
    assert s.secret_key == "d" * 40  # from .env, nothing in the environment
    assert s.port == 9200
    assert s.public_base_url == "http://127.0.0.1:9200"


@pytest.mark.parametrize(("name", "value", "message"), [
    ("SIYU_ENV", "staging", "SIYU_ENV must be development, test or production"),
    ("SIYU_PORT", "eighty", "SIYU_PORT must be an integer"),
    ("SIYU_SESSION_MAX_AGE", "1h", "SIYU_SESSION_MAX_AGE must be an integer"),
])
def test_bad_values_name_the_variable(env: pytest.MonkeyPatch, name: str, value: str, message: str) -> None:
    env.setenv("SIYU_SECRET_KEY", STRONG_KEY)
    env.setenv(name, value)
    with pytest.raises(ConfigurationError, match=message):
        load_settings()


def test_public_base_url_decides_secure_cookies(env: pytest.MonkeyPatch) -> None:
    env.setenv("SIYU_SECRET_KEY", STRONG_KEY)
    env.setenv("SIYU_PUBLIC_BASE_URL", "https://crm.example.cn/")
    s = load_settings()
    assert s.public_base_url == "https://crm.example.cn"
    assert s.cookie_secure
    env.setenv("SIYU_PUBLIC_BASE_URL", "http://localhost:8000")
    assert not load_settings().cookie_secure


def test_wechat_rates_are_configurable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from siyu.core.errors import ConfigurationError
    from siyu.core.settings import load_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SIYU_WECHAT_RATE_PER_MINUTE", "oa=120, wecom=600")
    assert dict(load_settings().wechat_rate_per_minute) == {"oa": 120, "mp": 6000, "wecom": 600}
    monkeypatch.setenv("SIYU_WECHAT_RATE_PER_MINUTE", "sms=5")
    with pytest.raises(ConfigurationError, match="SIYU_WECHAT_RATE_PER_MINUTE"):
        load_settings()


def test_the_worker_runs_at_a_lower_cpu_priority_by_default(env: pytest.MonkeyPatch) -> None:
    assert load_settings().worker_nice == 5
    env.setenv("SIYU_WORKER_NICE", "50")
    assert load_settings().worker_nice == 19  # the kernel's range
    env.setenv("SIYU_WORKER_NICE", "0")
    assert load_settings().worker_nice == 0


def test_the_web_stop_limit_defaults_to_20_s_and_is_at_least_one(env: pytest.MonkeyPatch) -> None:
    env.setenv("SIYU_SECRET_KEY", STRONG_KEY)
    env.delenv("SIYU_WEB_STOP_SECONDS", raising=False)
    assert load_settings().web_stop_seconds == 20
    env.setenv("SIYU_WEB_STOP_SECONDS", "5")
    assert load_settings().web_stop_seconds == 5
    env.setenv("SIYU_WEB_STOP_SECONDS", "0")
    assert load_settings().web_stop_seconds == 1
    env.setenv("SIYU_WEB_STOP_SECONDS", "soon")
    with pytest.raises(ConfigurationError, match="SIYU_WEB_STOP_SECONDS must be an integer"):
        load_settings()
