""""Check connection": ask WeChat for an access token with the stored credentials (the client's own token
request) and explain the outcome in plain words."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from siyu.wechat.client import request_token

N_ = str

# errcode → (plain-words explanation, what to do). English msgids; translated on display.
EXPLANATIONS: dict[int, tuple[str, str]] = {
    40164: (N_("This server's IP is not on the account's IP whitelist."),
            N_("Add this server's public IP to the IP whitelist in the WeChat console, then check again.")),
    40125: (N_("The AppSecret is wrong."),
            N_("Copy the AppSecret again from the console (or reset it) and save it here.")),
    40001: (N_("The AppSecret is wrong."),
            N_("Copy the AppSecret again from the console (or reset it) and save it here.")),
    40013: (N_("The AppID or CorpID is not valid."),
            N_("Check that you copied the AppID / CorpID of this account.")),
    40243: (N_("The AppSecret has been frozen."),
            N_("Unfreeze or reset the AppSecret in the WeChat console.")),
    41002: (N_("The AppID or CorpID is missing."), N_("Fill in the AppID / CorpID.")),
    41004: (N_("The secret is missing."), N_("Fill in the secret.")),
    40091: (N_("The secret is not valid for this corp."),
            N_("Use the Secret of the self-built app shown in WeCom admin → Apps.")),
    42001: (N_("The token expired while checking."), N_("Check again.")),
    45009: (N_("The account has used its daily API quota."),
            N_("Wait until tomorrow or reset the quota in the WeChat console.")),
    45011: (N_("Too many API calls this minute."), N_("Wait a minute and check again.")),
    48001: (N_("This account is not authorised for the API."),
            N_("Verify the account (认证) or grant API permission in the console.")),
    -1: (N_("WeChat is busy."), N_("Check again in a few seconds.")),
}


@dataclass(frozen=True)
class CheckOutcome:
    ok: bool
    errcode: int | None
    summary: str  # msgid
    advice: str  # msgid
    detail: str = ""  # WeChat's own errmsg or the network error, untranslated


def _explain(errcode: int, errmsg: str) -> CheckOutcome:
    summary, advice = EXPLANATIONS.get(
        errcode,
        (N_("WeChat refused the credentials (error {code})."), N_("Check the values against the WeChat console.")),
    )
    return CheckOutcome(False, errcode, summary, advice, errmsg)


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
