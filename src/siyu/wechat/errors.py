"""What WeChat's errors mean to a rep or an admin, in words, with what to do: the one table behind every
place Siyu shows one (a message that was not sent, Check connection, a profile WeChat would not give, a
picture that could not be fetched, the closed-window alternatives). English msgids, Chinese in the catalog.

Each entry also says whether trying the same again later can help (WeChat was busy, a limit, the network):
only then does the thread offer "Try again". Where it cannot (the customer no longer follows, the reply window
is closed), the entry says so and the thread offers the other ways to reach the customer instead.

Siyu's own reasons (a send that never reached WeChat, a task the rep did not confirm, a picture too large)
live here too, under their keys, so a stored reason or errcode always has its words.
"""

from __future__ import annotations

from dataclasses import dataclass

from siyu.core import i18n
from siyu.core.i18n import N_


@dataclass(frozen=True)
class Explanation:
    summary: str  # msgid: what happened
    advice: str  # msgid: what to do
    retry: bool = False  # the same again later can succeed (busy, a limit, the network)
    alternatives: bool = False  # a reply cannot go now: another way to reach the customer may


_CONFIG = N_("A tenant admin fixes this in Settings → Channels (Check connection tells what is wrong).")
_WAIT_FOR_CUSTOMER = N_("Wait for the customer to write again, or use one of the other ways to reach them "
                        "shown under the reply box.")

ERRCODES: dict[int, Explanation] = {
    # --- transient: trying again helps ----------------------------------------------------------------
    -1: Explanation(N_("WeChat was busy."), N_("Try again in a few seconds."), retry=True),
    45009: Explanation(N_("The account has used today's quota for this WeChat API."),
                       N_("Try again tomorrow, or reset the quota in the WeChat console."), retry=True),
    45011: Explanation(N_("Too many calls to WeChat this minute."), N_("Try again in a minute."), retry=True),
    42001: Explanation(N_("The access token expired while Siyu was using it."),
                       N_("Try again: Siyu fetches a new token by itself."), retry=True),
    40001: Explanation(N_("WeChat refused the access token (it is not the latest)."),
                       N_("Try again. If it keeps happening, another system is fetching tokens with the same "
                          "AppSecret: let Siyu be the only one, or have both use the stable token."), retry=True),
    40014: Explanation(N_("WeChat refused the access token."), N_("Try again: Siyu fetches a new token by itself."),
                       retry=True),
    41001: Explanation(N_("The access token was missing from the call."),
                       N_("Try again; if it persists, report it to Siyu's operators."), retry=True),
    41096: Explanation(N_("WeCom is still handing out the welcome message."), N_("Try again in a few seconds."),
                       retry=True),
    # --- the reply window and the customer's choices: trying again cannot help ------------------------
    45015: Explanation(N_("The reply window is closed: the customer has not written in the last 48 hours."),
                       _WAIT_FOR_CUSTOMER, alternatives=True),
    45047: Explanation(N_("The reply quota is used: WeChat allows 5 replies per customer message."),
                       _WAIT_FOR_CUSTOMER, alternatives=True),
    95018: Explanation(N_("The 微信客服 session is closed: the customer has not written in the last 48 hours."),
                       _WAIT_FOR_CUSTOMER, alternatives=True),
    95001: Explanation(N_("The 微信客服 reply quota is used: 5 messages until the customer writes again."),
                       _WAIT_FOR_CUSTOMER, alternatives=True),
    43004: Explanation(N_("The customer no longer follows the Official Account."),
                       N_("Nothing can be sent to them there; reach them on another channel (WeCom, the Mini "
                          "Program) if they use one."), alternatives=True),
    43101: Explanation(N_("The customer has not agreed to receive this message."),
                       N_("They give a consent each time they allow it; wait for the next one."), alternatives=True),
    48002: Explanation(N_("The customer has turned off messages from this account (or the API is not allowed "
                          "for this WeCom app)."),
                       N_("Reach them another way; on WeCom, a tenant admin grants the app the API."),
                       alternatives=True),
    41051: Explanation(N_("The welcome message can no longer be sent: its code is used or older than 20 seconds."),
                       N_("Nothing to do: the customer already received the welcome, or the chance has passed.")),
    # --- who the customer is ----------------------------------------------------------------------------
    40003: Explanation(N_("WeChat does not know this customer on this account (the openid is not valid)."),
                       N_("Check that the conversation belongs to this account; a customer of another account "
                          "cannot be written to here.")),
    46004: Explanation(N_("WeChat says this user does not exist."), N_("Nothing to do: the account was closed.")),
    40096: Explanation(N_("WeCom does not know this customer (the external_userid is not valid)."),
                       N_("The customer may have been added to another corp, or removed; check the WeCom contact.")),
    84061: Explanation(N_("WeCom says this customer is not (or no longer) a contact of that rep."),
                       N_("Ask the customer to add the rep again, or write through another rep who has them.")),
    95000: Explanation(N_("WeCom does not know this 微信客服 account (open_kfid)."),
                       N_("Check the 微信客服 accounts of the linked WeCom corp.")),
    95007: Explanation(N_("The 微信客服 sync token expired."), N_("Nothing to do: Siyu syncs again on the next "
                                                               "message."), retry=True),
    # --- media --------------------------------------------------------------------------------------------
    40007: Explanation(N_("The media has expired or is unknown to WeChat: WeChat keeps a customer's pictures, "
                          "voice and videos for 3 days."),
                       N_("Ask the customer to send it again if you still need it.")),
    40004: Explanation(N_("WeChat does not accept this kind of media."), N_("Send a JPG or PNG picture.")),
    40005: Explanation(N_("WeChat does not accept this file type."), N_("Send a JPG or PNG picture.")),
    40006: Explanation(N_("WeChat does not accept a file of this size."), N_("Send a smaller file.")),
    40009: Explanation(N_("The picture is too large for WeChat."), N_("Send a picture of at most 2 MB.")),
    40010: Explanation(N_("The voice message is too large for WeChat."), N_("Keep voice to 2 MB and 60 seconds.")),
    40011: Explanation(N_("The video is too large for WeChat."), N_("Keep videos to 10 MB.")),
    40012: Explanation(N_("The thumbnail is too large for WeChat."), N_("Keep thumbnails to 64 KB (JPG).")),
    44001: Explanation(N_("The media file was empty."), N_("Choose the file again and send it.")),
    45001: Explanation(N_("The media file is larger than WeChat allows."), N_("Send a smaller file.")),
    830002: Explanation(N_("The file is larger than 20 MB: WeCom hands such files out only in parts."),
                        N_("Ask the customer to share it another way.")),
    # --- what was sent -------------------------------------------------------------------------------------
    40008: Explanation(N_("WeChat does not accept this kind of message on this channel."),
                       N_("Send it as text instead.")),
    44004: Explanation(N_("The message was empty."), N_("Write something and send it again.")),
    45002: Explanation(N_("The message is too long for WeChat."), N_("Shorten it and send it again.")),
    40037: Explanation(N_("WeChat does not know this template (template_id)."),
                       N_("A tenant admin checks the template id in the inbox settings against the WeChat "
                          "console.")),
    47003: Explanation(N_("The template's fields do not match what WeChat expects."),
                       N_("A tenant admin checks the template's keyword names in the inbox settings.")),
    47001: Explanation(N_("WeChat could not read the request."), N_("Report it to Siyu's operators.")),
    40058: Explanation(N_("WeChat refused a parameter of the request."), N_("Report it to Siyu's operators.")),
    41063: Explanation(N_("WeCom does not know this task any more."), N_("Nothing to do: it can no longer be "
                                                                      "followed.")),
    40029: Explanation(N_("The Mini Program login code is not valid (or expired after 5 minutes)."),
                       N_("Log in again in the Mini Program.")),
    40163: Explanation(N_("The Mini Program login code was used already."), N_("Log in again in the Mini Program.")),
    # --- requests Siyu builds (menus, mass sends, QR codes, logins): seen by admins -------------------------
    40016: Explanation(N_("The menu has the wrong number of buttons (1 to 3 at the top)."), N_("Change the menu and "
                                                                                               "save it again.")),
    40017: Explanation(N_("A menu button has a type WeChat does not know."), N_("Change the menu and save it again.")),
    40018: Explanation(N_("A menu button's name is too long."), N_("Shorten the name and save the menu again.")),
    40019: Explanation(N_("A menu button's key is empty or too long."), N_("Change the key and save the menu again.")),
    40020: Explanation(N_("A menu button's link is empty or too long."), N_("Change the link and save the menu "
                                                                            "again.")),
    40023: Explanation(N_("A menu button has too many sub-buttons (at most 5)."), N_("Change the menu and save it "
                                                                                    "again.")),
    46003: Explanation(N_("The account has no menu yet."), N_("Create the menu first.")),
    40032: Explanation(N_("Too many (or too few) recipients in one call."), N_("Report it to Siyu's operators.")),
    40130: Explanation(N_("A mass send needs at least two recipients."), N_("Choose at least two people.")),
    45065: Explanation(N_("WeChat has this mass send already (the same send within 24 hours)."),
                       N_("Nothing to do: it was sent once.")),
    40097: Explanation(N_("WeChat refused the request's arguments."), N_("Report it to Siyu's operators.")),
    40002: Explanation(N_("WeChat refused the kind of credential asked for."), N_("Report it to Siyu's operators.")),
    41008: Explanation(N_("The Mini Program login code is missing."), N_("Log in again in the Mini Program.")),
    44002: Explanation(N_("The request to WeChat was empty."), N_("Report it to Siyu's operators.")),
    # --- the account's configuration: a tenant admin acts ------------------------------------------------
    40164: Explanation(N_("This server's IP is not on the account's IP whitelist."),
                       N_("Add this server's public IP to the IP whitelist in the WeChat console, then check again.")),
    40125: Explanation(N_("The AppSecret is wrong."),
                       N_("Copy the AppSecret again from the console (or reset it) and save it here.")),
    40013: Explanation(N_("The AppID or CorpID is not valid."),
                       N_("Check that you copied the AppID / CorpID of this account.")),
    40243: Explanation(N_("The AppSecret has been frozen."), N_("Unfreeze or reset the AppSecret in the WeChat "
                                                                "console.")),
    41002: Explanation(N_("The AppID or CorpID is missing."), N_("Fill in the AppID / CorpID.")),
    41004: Explanation(N_("The secret is missing."), N_("Fill in the secret.")),
    40091: Explanation(N_("The secret is not valid for this corp."),
                       N_("Use the Secret of the self-built app shown in WeCom admin → Apps.")),
    40056: Explanation(N_("The WeCom app (AgentId) is not valid."), _CONFIG),
    48001: Explanation(N_("This account is not authorised for the API."),
                       N_("Verify the account (认证) or grant API permission in the console.")),
    40066: Explanation(N_("WeChat does not offer this API at the configured address."),
                       N_("Check the API base setting.")),
    43001: Explanation(N_("WeChat refused the request method."), N_("Report it to Siyu's operators.")),
    43002: Explanation(N_("WeChat refused the request method."), N_("Report it to Siyu's operators.")),
}

# Where the same errcode means something else: Check connection asks for a token with the stored secret, so a
# refused credential there is the secret's fault, not the token's.
CREDENTIALS: dict[int, Explanation] = {
    40001: Explanation(N_("The AppSecret is wrong."),
                       N_("Copy the AppSecret again from the console (or reset it) and save it here.")),
    42001: Explanation(N_("The token expired while checking."), N_("Check again."), retry=True),
    -1: Explanation(N_("WeChat is busy."), N_("Check again in a few seconds."), retry=True),
    45011: Explanation(N_("Too many API calls this minute."), N_("Wait a minute and check again."), retry=True),
}

# Siyu's own reasons, stored where no errcode of WeChat's says it.
REASONS: dict[str, Explanation] = {
    "unreachable": Explanation(N_("WeChat could not be reached; nothing was delivered."),
                               N_("Try again; if it keeps failing, check this server's network."), retry=True),
    "token_unavailable": Explanation(N_("Siyu could not get an access token from WeChat; nothing was delivered."),
                                     N_("Try again; Check connection in Settings → Channels tells what is wrong."),
                                     retry=True),
    "busy": Explanation(N_("WeChat was busy."), N_("Try again in a few seconds."), retry=True),
    "rate_limited": Explanation(N_("WeChat asks to slow down."), N_("Try again in a minute."), retry=True),
    "gave_up": Explanation(N_("WeChat did not take it in time; nothing was delivered."), N_("Try again."),
                           retry=True),
    "outcome_unknown": Explanation(
        N_("WeChat did not answer in time, so the customer may or may not have received it. Siyu does not send "
           "it again by itself."), N_("Send it again only if the customer does not have it.")),
    "not_linked": Explanation(N_("The WeChat account is no longer linked to Siyu; nothing was delivered."),
                              N_("A tenant admin links it again in Settings → Channels.")),
    "config_problem": Explanation(N_("The account's configuration stops WeChat from taking it."), _CONFIG),
    "not_their_contact": Explanation(N_("WeCom says this customer is not (or no longer) a contact of that rep."),
                                     N_("Ask the customer to add the rep again, or write through another rep.")),
    "receive_limit": Explanation(N_("The customer has received as many messages from the brand's reps this month "
                                    "as WeCom allows."),
                                 N_("Wait for next month, or write when the customer writes to you.")),
    "rep_did_not_confirm": Explanation(N_("The rep did not send the task in WeCom within 3 days; Siyu stopped "
                                          "waiting for it."),
                                       N_("Ask the rep to send it from WeCom's group-message assistant, or reach "
                                          "the customer another way.")),
    "no_template": Explanation(N_("The notice template was removed from the inbox settings before the message "
                                  "went out."), N_("A tenant admin sets the template again in the inbox settings.")),
    "no_consent": Explanation(N_("The customer has not agreed to receive this message."),
                              N_("They give a consent each time they allow it; wait for the next one."),
                              alternatives=True),
    "window_closed": Explanation(N_("The reply window is closed: the customer has not written in the last 48 hours."),
                                 _WAIT_FOR_CUSTOMER, alternatives=True),
    "quota_used": Explanation(N_("The reply quota is used: WeChat allows 5 replies per customer message."),
                              _WAIT_FOR_CUSTOMER, alternatives=True),
    "not_following": Explanation(N_("The customer no longer follows the Official Account."),
                                 N_("Nothing can be sent to them there; reach them on another channel."),
                                 alternatives=True),
    "welcome_used": Explanation(N_("The welcome message can no longer be sent."), N_("Nothing to do.")),
    # media Siyu fetched or sent
    "too_large": Explanation(N_("The file is larger than Siyu keeps for this kind of media."),
                             N_("Ask the customer to share it another way.")),
    "bad_type": Explanation(N_("The file is not a kind of media Siyu shows."),
                            N_("Ask the customer to send it as a picture, voice or video.")),
    "expired": Explanation(N_("The media has expired: WeChat keeps a customer's pictures, voice and videos for 3 days."),
                           N_("Ask the customer to send it again if you still need it.")),
    "link_refused": Explanation(N_("WeChat answered with a link Siyu does not follow (not one of WeChat's own "
                                   "addresses)."), N_("Ask the customer to send it again.")),
    "stored_gone": Explanation(N_("The stored file is missing."), N_("Ask the customer to send it again.")),
}

UNKNOWN = Explanation(N_("WeChat did not accept it (error {code})."),
                      N_("Look the code up in WeChat's documentation, or ask Siyu's operators."))
UNKNOWN_REASON = Explanation(N_("It did not go through ({code})."), N_("Try again; if it keeps failing, ask Siyu's "
                                                                       "operators."), retry=True)


def explain(errcode: int | None = None, reason: str = "", *, context: str = "call") -> Explanation:
    """The explanation of a WeChat errcode, else of one of Siyu's reasons. `context="credentials"` for Check
    connection, where a refused token means a wrong secret."""
    if errcode is not None:
        if context == "credentials" and errcode in CREDENTIALS:
            return CREDENTIALS[errcode]
        if errcode in ERRCODES:
            return ERRCODES[errcode]
    if reason in REASONS:
        return REASONS[reason]
    return UNKNOWN if errcode is not None else UNKNOWN_REASON


def of_stored(error: str) -> Explanation:
    """A stored error: an errcode ("45015", "-1") or a reason key ("unreachable")."""
    code = error.strip()
    if code.lstrip("-").isdigit() and len(code) < 12:
        return explain(int(code))
    return explain(None, code)


def code_of(error: str) -> str:
    return error.strip() or "?"


@dataclass(frozen=True)
class Words:
    summary: str
    advice: str
    retry: bool
    alternatives: bool

    @property
    def text(self) -> str:
        return f"{self.summary} {self.advice}"


def words(explanation: Explanation, code: object = "?") -> Words:
    """The explanation in the reader's language (the current locale)."""
    return Words(i18n.gettext(explanation.summary).format(code=code), i18n.gettext(explanation.advice).format(code=code),
                 explanation.retry, explanation.alternatives)


def describe(errcode: int | None = None, reason: str = "", *, context: str = "call") -> Words:
    return words(explain(errcode, reason, context=context), errcode if errcode is not None else (reason or "?"))


def describe_stored(error: str) -> Words:
    return words(of_stored(error), code_of(error))
