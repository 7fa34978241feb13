"""Whether WeChat's servers can call the public base URL, told without asking the network."""

from __future__ import annotations

import pytest

from siyu.tenants.linking import reach_problems


def said(url: str) -> list[str]:
    return [p.message.format(**p.params) for p in reach_problems(url)]


@pytest.mark.parametrize("url", ["https://crm.maison-lumiere.cn", "https://siyu.example.com.cn/", "https://8.8.8.8",
                                 "https://crm.brand.com:443", "https://[2001:4860:4860::8888]"])
def test_a_public_https_address_is_fine(url: str) -> None:
    assert reach_problems(url) == []


@pytest.mark.parametrize(("url", "words"), [
    ("https://127.0.0.1", "127.0.0.1 is this computer's own (loopback) address"),
    ("https://127.8.9.10", "loopback"),
    ("https://localhost", "localhost is this computer's own (loopback) address"),
    ("https://siyu.localhost", "loopback"),
    ("https://[::1]", "::1 is this computer's own (loopback) address"),
    ("https://[::ffff:127.0.0.1]", "loopback"),
    ("https://10.1.2.3", "10.1.2.3 is a private network address"),
    ("https://172.20.0.5", "private network address"),
    ("https://192.168.31.7", "private network address"),
    ("https://[fd12:3456::1]", "private network address"),
    ("https://169.254.10.1", "169.254.10.1 is a link-local address"),
    ("https://[fe80::1]", "link-local"),
    ("https://100.72.1.9", "100.72.1.9 is in the carrier-grade NAT range (100.64.0.0/10)"),
    ("https://0.0.0.0", "0.0.0.0 is not an address anyone on the internet can reach"),
    ("https://siyu-web", "siyu-web is not a public domain name"),
    ("https://siyu.test", "siyu.test is not a public domain name"),
    ("https://crm.corp.internal", "not a public domain name"),
    ("https://nas.local", "not a public domain name"),
    ("https://router.home.arpa", "not a public domain name"),
])
def test_an_address_wechat_cannot_reach_is_named(url: str, words: str) -> None:
    problems = said(url)
    assert len(problems) == 1, problems
    assert words in problems[0]


def test_http_and_other_ports_are_flagged_besides_the_host() -> None:
    problems = said("http://127.0.0.1:8000")
    assert len(problems) == 3
    assert "loopback" in problems[0]
    assert problems[1].startswith("The address starts with http://, not https://")
    assert problems[2] == "WeChat calls servers on port 443 (https) or 80 (http) only, not on port 8000."
    assert said("http://crm.brand.com") == [problems[1]]
    assert said("https://crm.brand.com:8443") == [
        "WeChat calls servers on port 443 (https) or 80 (http) only, not on port 8443."]


@pytest.mark.parametrize("url", ["", "crm.brand.com", "ftp://crm.brand.com", "https://", "https://crm.brand.com:99999"])
def test_something_that_is_no_web_address_says_so(url: str) -> None:
    problems = said(url)
    assert len(problems) == 1 and "is not a web address" in problems[0]
