"""Settings, read from the environment (and `.env`) once.

Every knob Siyu has lives here, so `grep SIYU_` in this file is the full list.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from siyu.core.errors import ConfigurationError

REPO_ROOT = Path(__file__).resolve().parents[3]
FRONTEND_DIR = REPO_ROOT / "frontend"


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def _env_int(name: str, default: int) -> int:
    raw = _env(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from exc


def _env_float(name: str, default: float) -> float:
    raw = _env(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from exc
    if not 0 < value < 3600:
        raise ConfigurationError(f"{name} must be between 0 and 3600 seconds, got {raw!r}")
    return value


def _env_bool(name: str, default: bool) -> bool:
    raw = _env(name).lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"{name} must be true or false, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    env: str  # "development" | "test" | "production"
    data_dir: Path
    host: str
    port: int
    public_base_url: str
    database_url: str  # empty: the embedded server under data_dir is used
    redis_url: str  # empty: the embedded server under data_dir is used
    wechat_api_base: str
    wecom_api_base: str
    secret_key: str
    previous_secret_keys: tuple[str, ...] = field(default_factory=tuple)
    web_workers: int = 1
    # How long a stopping web process gives its workers to finish open requests before it kills them (a
    # deploy never waits forever; below an orchestrator's usual 30 s grace period).
    web_stop_seconds: int = 20
    # The worker's CPU niceness: background jobs yield to the web process, which must answer WeChat's
    # callbacks within 5 s and reps' clicks at once (0 = same priority; 19 = lowest).
    worker_nice: int = 5
    # Re-engagement: a claimed delivery not settled within this many seconds is taken back by the sweeper
    # (its worker died); the send-once ledger keeps a second run from sending it twice.
    engagement_lease_seconds: int = 120
    # Re-engagement's sends run in a lane of their own (an arq queue served by `siyu worker --lane engagement`,
    # niced further), so a broadcast never takes the CPU a rep's reply needs. Off: one worker does everything.
    engagement_lane: bool = False
    # How many `siyu worker --lane engagement` processes `make run` starts: each sends up to 32 at once on
    # one core (about 700–800 sends a second here); two keep a 1,000-a-second journey schedule on time.
    engagement_workers: int = 2
    session_max_age: int = 8 * 3600
    # Seconds to connect to Redis and to wait for each answer: a Redis that hangs makes a page answer with an
    # error (and /readyz with 503) instead of holding every request.
    redis_timeout: float = 2.0
    # Seconds a job may run. A worker that dies mid-job leaves its claim for this + 10 s; then another runs it.
    job_timeout: int = 60
    login_max_failures_account: int = 5
    login_max_failures_ip: int = 30
    login_window_seconds: int = 15 * 60
    # Failures on one account from unknown clients after which it takes one attempt per interval.
    login_slow_after_account: int = 50
    login_slow_interval_seconds: int = 5
    callback_max_skew: int = 300
    default_locale: str = "zh_CN"
    log_level: str = "INFO"
    bench_bare_endpoint: bool = False  # POST /wechat-bare, the baseline of `make bench-ingest`
    # Requests per minute per (tenant, account); WeChat's documented WeCom limit, Siyu's choice for OA/MP.
    wechat_rate_per_minute: tuple[tuple[str, int], ...] = (("oa", 6000), ("mp", 6000), ("wecom", 10000))
    # How long a WeChat API call may wait for its answer, and for its connection. A send without an
    # answer in time is recorded as "may not have been delivered", never sent again by itself.
    wechat_timeout_ms: int = 10_000
    wechat_connect_timeout_ms: int = 5_000
    # Where customers' pictures, voice and videos and reps' uploads are kept (the local media store).
    media_dir: Path = Path(".siyu/media")

    @property
    def is_development(self) -> bool:
        return self.env in {"development", "test"}

    @property
    def cookie_secure(self) -> bool:
        return self.public_base_url.startswith("https://")


def _load_dotenv() -> None:
    try:
        from dotenv import load_dotenv
    except ImportError:  # pragma: no cover - dependency is declared
        return
    # The process environment wins over `.env`.
    load_dotenv(Path.cwd() / ".env", override=False)


def _rates(raw: str) -> tuple[tuple[str, int], ...]:
    """`oa=6000,mp=6000,wecom=10000`: any subset; the others keep their defaults."""
    rates = {"oa": 6000, "mp": 6000, "wecom": 10000}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        channel, _, value = part.partition("=")
        if channel.strip() not in rates or not value.strip().isdigit() or int(value) < 1:
            raise ConfigurationError(
                f"SIYU_WECHAT_RATE_PER_MINUTE: expected entries like oa=6000,mp=6000,wecom=10000, got {part!r}")
        rates[channel.strip()] = int(value)
    return tuple(rates.items())


def _dev_secret_key(data_dir: Path) -> str:
    """In development a key is generated once and kept in the data dir."""
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_urlsafe(48)
    # Created with 0600 so other local users cannot read it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key


def dev_previous_keys(data_dir: Path) -> tuple[str, ...]:
    path = data_dir / "secret_key.previous"
    if not path.exists():
        return ()
    return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())


def load_settings() -> Settings:
    _load_dotenv()
    env = _env("SIYU_ENV", "development")
    if env not in {"development", "test", "production"}:
        raise ConfigurationError(f"SIYU_ENV must be development, test or production, got {env!r}")
    data_dir = Path(_env("SIYU_DATA_DIR", ".siyu")).expanduser().resolve()
    port = _env_int("SIYU_PORT", 8000)
    host = _env("SIYU_HOST", "127.0.0.1")
    public_base_url = _env("SIYU_PUBLIC_BASE_URL", f"http://{host}:{port}").rstrip("/")

    secret_key = _env("SIYU_SECRET_KEY")
    previous = tuple(k.strip() for k in _env("SIYU_PREVIOUS_SECRET_KEYS").split(",") if k.strip())
    if not secret_key:
        if env == "production":
            raise ConfigurationError(
                "SIYU_SECRET_KEY is not set. Siyu encrypts WeChat secrets with it and refuses to start "
                "without one outside development. Generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'` and keep it safe."
            )
        secret_key = _dev_secret_key(data_dir)
        previous = previous + dev_previous_keys(data_dir)
    elif len(secret_key) < 32:
        raise ConfigurationError("SIYU_SECRET_KEY must be at least 32 characters long")

    return Settings(
        env=env,
        data_dir=data_dir,
        host=host,
        port=port,
        public_base_url=public_base_url,
        database_url=_env("DATABASE_URL"),
        redis_url=_env("REDIS_URL"),
        wechat_api_base=_env("WECHAT_API_BASE", "https://api.weixin.qq.com").rstrip("/"),
        wecom_api_base=_env("WECOM_API_BASE", "https://qyapi.weixin.qq.com").rstrip("/"),
        secret_key=secret_key,
        previous_secret_keys=previous,
        web_workers=_env_int("SIYU_WEB_WORKERS", 1),
        web_stop_seconds=max(1, _env_int("SIYU_WEB_STOP_SECONDS", 20)),
        worker_nice=max(0, min(19, _env_int("SIYU_WORKER_NICE", 5))),
        engagement_lease_seconds=max(1, _env_int("SIYU_ENGAGEMENT_LEASE_SECONDS", 120)),
        engagement_lane=_env_bool("SIYU_ENGAGEMENT_LANE", False),
        engagement_workers=max(1, min(16, _env_int("SIYU_ENGAGEMENT_WORKERS", 2))),
        session_max_age=_env_int("SIYU_SESSION_MAX_AGE", 8 * 3600),
        redis_timeout=_env_float("SIYU_REDIS_TIMEOUT", 2.0),
        job_timeout=max(1, _env_int("SIYU_JOB_TIMEOUT", 60)),
        login_max_failures_account=_env_int("SIYU_LOGIN_MAX_FAILURES_ACCOUNT", 5),
        login_max_failures_ip=_env_int("SIYU_LOGIN_MAX_FAILURES_IP", 30),
        login_window_seconds=_env_int("SIYU_LOGIN_WINDOW_SECONDS", 15 * 60),
        login_slow_after_account=_env_int("SIYU_LOGIN_SLOW_AFTER_ACCOUNT", 50),
        login_slow_interval_seconds=max(1, _env_int("SIYU_LOGIN_SLOW_INTERVAL_SECONDS", 5)),
        callback_max_skew=_env_int("SIYU_CALLBACK_MAX_SKEW", 300),
        default_locale=_env("SIYU_DEFAULT_LOCALE", "zh_CN"),
        log_level=_env("SIYU_LOG_LEVEL", "INFO").upper(),
        bench_bare_endpoint=_env_bool("SIYU_BENCH_BARE_ENDPOINT", False),
        wechat_rate_per_minute=_rates(_env("SIYU_WECHAT_RATE_PER_MINUTE")),
        wechat_timeout_ms=max(100, _env_int("SIYU_WECHAT_TIMEOUT_MS", 10_000)),
        wechat_connect_timeout_ms=max(100, _env_int("SIYU_WECHAT_CONNECT_TIMEOUT_MS", 5_000)),
        media_dir=Path(_env("SIYU_MEDIA_DIR") or str(data_dir / "media")).expanduser().resolve(),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def reset_settings() -> None:
    """Forget the cached settings (tests and `siyu secrets rotate` change the environment)."""
    get_settings.cache_clear()
