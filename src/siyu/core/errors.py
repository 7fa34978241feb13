"""The small error hierarchy every layer raises; `siyu.app` maps it to HTML, htmx fragments or JSON once."""

from __future__ import annotations

from dataclasses import dataclass, field


class SiyuError(Exception):
    status_code = 500
    code = "error"

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(SiyuError):
    """The process cannot start or an account is misconfigured."""

    code = "configuration"


class NotFound(SiyuError):
    """Missing, or belonging to another tenant: the two are indistinguishable on purpose."""

    status_code = 404
    code = "not_found"

    def __init__(self, message: str = "Not found") -> None:
        super().__init__(message)


class Forbidden(SiyuError):
    status_code = 403
    code = "forbidden"


class Conflict(SiyuError):
    status_code = 409
    code = "conflict"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class TooManyRequests(SiyuError):
    status_code = 429
    code = "too_many_requests"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class FieldError:
    field: str
    message: str  # an English msgid; translated where it is shown
    params: dict[str, object] = field(default_factory=dict)


class InvalidInput(SiyuError):
    """One or more fields are wrong. Each error names its field."""

    status_code = 400
    code = "invalid_input"

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e.field}: {e.message.format(**e.params)}" for e in errors))

    @classmethod
    def one(cls, field_name: str, message: str, **params: object) -> InvalidInput:
        return cls([FieldError(field_name, message, params)])

    def by_field(self) -> dict[str, FieldError]:
        return {e.field: e for e in self.errors}


class WeChatError(SiyuError):
    """WeChat answered with a non-zero errcode."""

    status_code = 502
    code = "wechat_error"

    def __init__(self, errcode: int, errmsg: str = "") -> None:
        super().__init__(f"WeChat errcode {errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg
