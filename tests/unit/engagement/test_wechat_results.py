"""WeChat's job-result pushes as the gateway normalises them for re-engagement: MASSSENDJOBFINISH and
TEMPLATESENDJOBFINISH keep their MsgID and totals, and two results in one second stay two events."""

from __future__ import annotations

from siyu.wechat.protocol import normalize

MASS = {"ToUserName": "gh_x", "FromUserName": "mphelper", "CreateTime": "1700000000", "MsgType": "event",
        "Event": "MASSSENDJOBFINISH", "MsgID": "1000001625", "Status": "send success", "TotalCount": "100",
        "FilterCount": "80", "SentCount": "75", "ErrorCount": "5"}


def test_mass_send_results_keep_their_msg_id_and_totals() -> None:
    n = normalize("oa", MASS)
    assert n.kind == "mass_send_finished"
    assert n.details == {"msg_id": "1000001625", "status": "send success", "totalcount": "100", "filtercount": "80",
                         "sentcount": "75", "errorcount": "5"}
    other = normalize("oa", {**MASS, "MsgID": "1000001626"})
    assert other.dedup_key != n.dedup_key  # the same second, the same system sender: still two results


def test_template_results() -> None:
    n = normalize("oa", {"ToUserName": "gh_x", "FromUserName": "oUser", "CreateTime": "1700000000",
                         "MsgType": "event", "Event": "TEMPLATESENDJOBFINISH", "MsgID": "200", "Status": "failed:user block"})
    assert (n.kind, n.details["msg_id"], n.details["status"]) == ("template_sent", "200", "failed:user block")
