""""Check connection": ask WeChat for an access token with the stored credentials (the client's own token
request) and explain the outcome in plain words."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from siyu.wechat import errors
from siyu.wechat.client import request_token

N_ = str


@dataclass(frozen=True)
class CheckOutcome:
    ok: bool
    errcode: int | None
    summary: str  # msgid
    advice: str  # msgid
    detail: str = ""  # WeChat's own errmsg or the network error, untranslated


def _explain(errcode: int, errmsg: str) -> CheckOutcome:
    """A refused token request in words: the one table of WeChat's errors (`errors`), read as a check of the
    credentials (there a refused credential is the secret's fault)."""
    found = errors.explain(errcode, context="credentials")
    if found is errors.UNKNOWN:
        return CheckOutcome(False, errcode, N_("WeChat refused the credentials (error {code})."),
                            N_("Check the values against the WeChat console."), errmsg)
    return CheckOutcome(False, errcode, found.summary, found.advice, errmsg)


async def check_credentials(kind: str, app_id: str, secret: str, timeout: float = 8.0) -> CheckOutcome:
    try:
        async with httpx.AsyncClient(timeout=timeout) as http:
            resp = await request_token(http, kind, app_id, secret)
    except httpx.TimeoutException:
        return CheckOutcome(False, None, N_("WeChat did not answer in time."),
                            N_("Check this server's outbound network access, then try again."), "timeout")
    except httpx.HTTPError as exc:
        return CheckOutcome(False, None, N_("This server could not reach WeChat's API."),
                            N_("Check this server's outbound network access and the API base setting."),
                            type(exc).__name__)
    try:
        body = resp.json()
    except ValueError:
        return CheckOutcome(False, None, N_("WeChat answered with something that is not JSON."),
                            N_("Check the API base setting."), f"HTTP {resp.status_code}")
    errcode = int(body.get("errcode", 0) or 0)
    if errcode == 0 and body.get("access_token"):
        return CheckOutcome(True, 0, N_("Connected: WeChat issued an access token."),
                            N_("Nothing to do."), "")
    return _explain(errcode, str(body.get("errmsg", "")))
