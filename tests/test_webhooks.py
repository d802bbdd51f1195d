"""Webhooks without HTTP routes: who may be called, signatures, retries, drain, subscriptions.

Real HTTP goes only to a receiver on 127.0.0.1 that the policy allows; every test
runs under a guard that fails any connection or lookup leaving loopback.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator

import pytest
import standardwebhooks

from service.tenancy.keys import hash_key
from service.tenancy.principal import ANONYMOUS, Principal
from service.webhooks import (
    AddressPolicy,
    WebhookDeliverer,
    WebhookRefused,
    Webhooks,
    WebhookSecrets,
    new_secret,
    parse_allow,
)
from service.webhooks.addresses import is_public
from service.webhooks.delivery import backoff_seconds, retry_after_seconds
from service.webhooks.signing import secret_key, signature
from tests.webhook_support import (
    Answer,
    LoopbackOnly,
    StubResolver,
    loopback_only,
    running_receiver,
)

LOOPBACK = parse_allow("127.0.0.1/32")


@pytest.fixture(autouse=True)
def guard() -> Iterator[LoopbackOnly]:
    with loopback_only() as g:
        yield g


class Counts:
    def __init__(self) -> None:
        self.attempts: list[str] = []
        self.outcomes: list[str] = []

    def webhook_attempted(self, result: str) -> None:
        self.attempts.append(result)

    def webhook_finished(self, outcome: str) -> None:
        self.outcomes.append(outcome)


def make_webhooks(policy: AddressPolicy, counts: Counts | None = None, *,
                  retry_seconds: float = 30.0, first_retry: float = 0.01,
                  timeout: float = 10.0) -> Webhooks:
    deliverer = WebhookDeliverer(policy, retry_seconds=retry_seconds, observer=counts,
                                 first_retry=first_retry, timeout=timeout)
    return Webhooks(policy, WebhookSecrets(), deliverer)


async def wait_outcomes(counts: Counts, n: int = 1) -> list[str]:
    import asyncio
    for _ in range(1500):
        if len(counts.outcomes) >= n:
            return counts.outcomes
        await asyncio.sleep(0.02)
    raise AssertionError("no outcome")


# --- signing -------------------------------------------------------------------------------

def test_new_secret_is_whsec_and_32_random_bytes() -> None:
    one, two = new_secret(), new_secret()
    assert one.startswith("whsec_") and one != two
    assert len(secret_key(one)) == 32


def test_signature_matches_the_standard_webhooks_library() -> None:
    secret = new_secret()
    body = b'{"type":"job.completed"}'
    ours = signature(secret, "msg_1", 1_700_000_000, body)
    from datetime import UTC, datetime
    theirs = standardwebhooks.Webhook(secret).sign(
        "msg_1", datetime.fromtimestamp(1_700_000_000, UTC), body.decode())
    assert ours == theirs


@pytest.mark.parametrize("bad", ["abc", "whsec_!!!", "whsec_" + "QUJD"])
def test_bad_operator_secrets_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        WebhookSecrets({"anonymous": bad})


def test_secrets_per_principal_and_the_operators_preset() -> None:
    preset = new_secret()
    source = WebhookSecrets({"anonymous": preset})
    assert source.secret_for(ANONYMOUS) == preset
    made = source.secret_for(Principal("key_a"))
    assert made != preset and source.secret_for(Principal("key_a")) == made
    assert source.secret_for(Principal("key_b")) != made


def test_an_api_keys_secret_is_the_same_on_every_replica_and_after_a_restart() -> None:
    one = Principal("key_a", key_hash=hash_key("a"))
    other = Principal("key_b", key_hash=hash_key("b"))
    secret = WebhookSecrets().secret_for(one)
    assert WebhookSecrets().secret_for(one) == secret  # another process derives the same
    assert secret_key(secret) and secret != WebhookSecrets().secret_for(other)
    assert hash_key("a") not in secret and hash_key("a") not in repr(one)


# --- addresses -----------------------------------------------------------------------------

REFUSED_LITERALS = [
    "http://127.0.0.1/hook", "http://10.0.0.1/hook", "http://172.16.5.4/hook",
    "http://192.168.1.1/hook", "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/hook", "http://[::1]/hook", "http://[fc00::1]/hook",
    "http://224.0.0.1/hook", "http://[ff02::1]/hook", "http://0.0.0.0/hook",
    "http://240.0.0.1/hook", "http://255.255.255.255/hook", "http://100.64.0.1/hook",
    "http://[::ffff:10.0.0.1]/hook", "http://[::ffff:127.0.0.1]/hook",
    "http://[64:ff9b::a9fe:a9fe]/hook", "http://[2002:a00:1::]/hook",
]


@pytest.mark.parametrize("url", REFUSED_LITERALS)
async def test_literal_private_addresses_are_refused_before_any_connection(
        url: str, guard: LoopbackOnly) -> None:
    resolver = StubResolver({})
    with pytest.raises(WebhookRefused):
        await AddressPolicy(resolver=resolver).resolve(url)
    assert resolver.lookups == [] and guard.connects == []


@pytest.mark.parametrize("addresses", [["169.254.169.254"], ["10.1.2.3"], ["127.0.0.1"],
                                       ["93.184.216.34", "10.0.0.1"], ["fe80::1"]])
async def test_names_resolving_to_private_addresses_are_refused(
        addresses: list[str], guard: LoopbackOnly) -> None:
    policy = AddressPolicy(resolver=StubResolver({"hooks.example": addresses}))
    with pytest.raises(WebhookRefused):
        await policy.resolve("https://hooks.example/in")
    assert guard.connects == []


async def test_a_public_name_resolves_to_a_target_that_keeps_the_name() -> None:
    policy = AddressPolicy(resolver=StubResolver({"hooks.example": ["93.184.216.34"]}))
    target = await policy.resolve("https://hooks.example:8443/in?x=1")
    assert str(target.url) == "https://93.184.216.34:8443/in?x=1"
    assert target.host_header == "hooks.example:8443"
    assert target.sni_hostname == "hooks.example"


async def test_a_name_that_never_resolves_is_refused_in_bounded_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from service.webhooks import addresses

    async def hangs(host: str, port: int) -> list[ipaddress.IPv4Address]:
        await asyncio.sleep(3600)
        return []

    monkeypatch.setattr(addresses, "RESOLVE_TIMEOUT_SECONDS", 0.1)
    with pytest.raises(WebhookRefused, match="does not resolve"):
        await AddressPolicy(resolver=hangs).resolve("http://slow.example/x")


@pytest.mark.parametrize("url", ["ftp://example.com/x", "/relative", "http://", "not a url",
                                 "http://unknown.example/x"])
async def test_unusable_urls_are_refused(url: str) -> None:
    with pytest.raises(WebhookRefused):
        await AddressPolicy(resolver=StubResolver({})).resolve(url)


def test_the_allow_list_opens_only_its_networks() -> None:
    policy = AddressPolicy(allow=parse_allow("127.0.0.1/32, 10.8.0.0/16"))
    assert policy.permits(ipaddress.ip_address("127.0.0.1"))
    assert policy.permits(ipaddress.ip_address("::ffff:127.0.0.1"))
    assert policy.permits(ipaddress.ip_address("10.8.3.4"))
    assert not policy.permits(ipaddress.ip_address("127.0.0.2"))
    assert not policy.permits(ipaddress.ip_address("10.9.0.1"))
    assert is_public(ipaddress.ip_address("93.184.216.34"))
    assert is_public(ipaddress.ip_address("::ffff:93.184.216.34"))
    with pytest.raises(ValueError, match="not a CIDR"):
        parse_allow("127.0.0.1/33")


# --- delivery ------------------------------------------------------------------------------

async def test_a_notice_is_signed_verifiable_and_thin() -> None:
    counts = Counts()
    with running_receiver() as receiver:
        webhooks = make_webhooks(AddressPolicy(allow=LOOPBACK), counts)
        webhooks.start()
        sub = await webhooks.subscribe("job", receiver.url, ["completed"], ANONYMOUS)
        assert webhooks.notify(sub, "completed", {"id": "job_1", "status": "succeeded"})
        (got,) = await receiver.wait_for(1)
        await webhooks.stop(5)
    verified = standardwebhooks.Webhook(sub.secret).verify(got.body, got.headers)
    assert verified["type"] == "job.completed"
    assert verified["data"] == {"id": "job_1", "status": "succeeded"}
    assert got.headers["webhook-id"].startswith("msg_")
    assert got.headers["content-type"] == "application/json"
    assert counts.outcomes == ["delivered"] and counts.attempts == ["2xx"]
    assert [a.status for a in sub.attempts] == [200]
    assert sub.view()["deliveries"] == [a.view() for a in sub.attempts]


async def test_retried_through_500s_with_the_same_id_each_time_signed() -> None:
    counts = Counts()
    with running_receiver([Answer(500), Answer(503), Answer(200)]) as receiver:
        webhooks = make_webhooks(AddressPolicy(allow=LOOPBACK), counts)
        webhooks.start()
        sub = await webhooks.subscribe("job", receiver.url, ["completed"], ANONYMOUS)
        webhooks.notify(sub, "completed", {"id": "job_2", "status": "failed"})
        got = await receiver.wait_for(3)
        assert await wait_outcomes(counts) == ["delivered"]
        await webhooks.stop(5)
    assert len({r.headers["webhook-id"] for r in got}) == 1
    for r in got:
        standardwebhooks.Webhook(sub.secret).verify(r.body, r.headers)
    assert [a.status for a in sub.attempts] == [500, 503, 200]
    assert counts.attempts == ["5xx", "5xx", "2xx"]


async def test_retry_after_is_honoured() -> None:
    with running_receiver([Answer(429, {"Retry-After": "1"}), Answer(200)]) as receiver:
        webhooks = make_webhooks(AddressPolicy(allow=LOOPBACK))
        webhooks.start()
        sub = await webhooks.subscribe("job", receiver.url, [], ANONYMOUS)
        webhooks.notify(sub, "completed", {"id": "job_3"})
        first, second = await receiver.wait_for(2)
        await webhooks.stop(5)
    # Without Retry-After the first retry would come after 10 ms at most.
    assert second.at - first.at >= 0.9


@pytest.mark.parametrize(("answer", "outcome"), [(410, "gone"), (400, "rejected"),
                                                 (302, "rejected")])
async def test_gone_and_other_answers_end_a_delivery(answer: int, outcome: str) -> None:
    counts = Counts()
    headers = {"Location": "http://127.0.0.1:1/elsewhere"} if answer == 302 else {}
    with running_receiver([Answer(answer, headers), Answer(200)]) as receiver:
        webhooks = make_webhooks(AddressPolicy(allow=LOOPBACK), counts)
        webhooks.start()
        sub = await webhooks.subscribe("job", receiver.url, [], ANONYMOUS)
        webhooks.notify(sub, "completed", {"id": "job_4"})
        assert await wait_outcomes(counts) == [outcome]
        await webhooks.stop(5)
        assert len(receiver.received) == 1  # no retry, no redirect followed


async def test_retries_stop_after_the_retry_window() -> None:
    counts = Counts()
    with running_receiver([Answer(500)]) as receiver:
        webhooks = make_webhooks(AddressPolicy(allow=LOOPBACK), counts, retry_seconds=0.5,
                                 first_retry=0.05)
        webhooks.start()
        sub = await webhooks.subscribe("job", receiver.url, [], ANONYMOUS)
        webhooks.notify(sub, "completed", {"id": "job_5"})
        assert await wait_outcomes(counts) == ["expired"]
        await webhooks.stop(5)
    assert 2 <= len(receiver.received) == len(sub.attempts) <= 10


async def test_a_slow_receiver_times_out_and_is_retried() -> None:
    counts = Counts()
    with running_receiver([Answer(200, delay=3.0), Answer(200)]) as receiver:
        webhooks = make_webhooks(AddressPolicy(allow=LOOPBACK), counts, timeout=0.5)
        webhooks.start()
        sub = await webhooks.subscribe("job", receiver.url, [], ANONYMOUS)
        webhooks.notify(sub, "completed", {"id": "job_6"})
        assert await wait_outcomes(counts) == ["delivered"]
        await webhooks.stop(5)
    assert [(a.status, a.error) for a in sub.attempts] == [(None, "timeout"), (200, None)]


async def test_shutdown_gives_a_waiting_delivery_one_last_try() -> None:
    counts = Counts()
    with running_receiver([Answer(500), Answer(200)]) as receiver:
        # The next retry would be a minute away; the drain brings it forward.
        webhooks = make_webhooks(AddressPolicy(allow=LOOPBACK), counts, first_retry=60.0,
                                 retry_seconds=600)
        webhooks.start()
        sub = await webhooks.subscribe("job", receiver.url, [], ANONYMOUS)
        webhooks.notify(sub, "completed", {"id": "job_7"})
        await receiver.wait_for(1)
        await webhooks.stop(5)
        assert len(receiver.received) == 2
    assert counts.outcomes == ["delivered"]


async def test_shutdown_tries_once_only_then_drops() -> None:
    counts = Counts()
    with running_receiver([Answer(500)]) as receiver:
        webhooks = make_webhooks(AddressPolicy(allow=LOOPBACK), counts, first_retry=60.0,
                                 retry_seconds=600)
        webhooks.start()
        sub = await webhooks.subscribe("job", receiver.url, [], ANONYMOUS)
        webhooks.notify(sub, "completed", {"id": "job_8"})
        await receiver.wait_for(1)
        await webhooks.stop(5)
        assert len(receiver.received) == 2
    assert counts.outcomes == ["dropped"]


async def test_dns_rebinding_is_refused_at_connect_time(guard: LoopbackOnly) -> None:
    counts = Counts()
    resolver = StubResolver({"hooks.example": ["93.184.216.34"]})
    webhooks = make_webhooks(AddressPolicy(resolver=resolver), counts)
    webhooks.start()
    sub = await webhooks.subscribe("job", "http://hooks.example/in", [], ANONYMOUS)
    resolver.names["hooks.example"] = ["10.0.0.7"]  # the name now points inside
    webhooks.notify(sub, "completed", {"id": "job_9"})
    assert await wait_outcomes(counts) == ["refused"]
    await webhooks.stop(5)
    assert [(a.status, a.error) for a in sub.attempts] == [(None, "refused")]
    assert guard.connects == [] and guard.refused == []


async def test_a_name_allowed_by_the_operator_is_called_with_its_host_header() -> None:
    with running_receiver() as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        resolver = StubResolver({"hooks.internal": ["127.0.0.1"]})
        webhooks = make_webhooks(AddressPolicy(allow=LOOPBACK, resolver=resolver))
        webhooks.start()
        sub = await webhooks.subscribe("batch", f"http://hooks.internal:{port}/hook",
                                       [], ANONYMOUS)
        webhooks.notify(sub, "completed", {"id": "batch_1"})
        (got,) = await receiver.wait_for(1)
        await webhooks.stop(5)
    assert got.headers["host"] == f"hooks.internal:{port}"
    assert json.loads(got.body)["type"] == "batch.completed"


# --- subscriptions -------------------------------------------------------------------------

class Ticking:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_progress_is_sent_at_most_once_a_second_and_only_when_asked() -> None:
    with running_receiver() as receiver:
        policy = AddressPolicy(allow=LOOPBACK)
        clock = Ticking()
        deliverer = WebhookDeliverer(policy, retry_seconds=5)
        webhooks = Webhooks(policy, WebhookSecrets(), deliverer, monotonic=clock)
        webhooks.start()
        sub = await webhooks.subscribe("job", receiver.url, ["progress", "completed"],
                                       Principal("k"))
        sent = [webhooks.notify(sub, "started", {"id": "j"})]
        for _ in range(5):
            sent.append(webhooks.notify(sub, "progress", {"id": "j"}))
            clock.now += 0.3
        sent.append(webhooks.notify(sub, "completed", {"id": "j"}))
        got = await receiver.wait_for(3)
        await webhooks.stop(5)
    # started not asked for; progress at t=0 and t=1.2; completed always.
    assert sent == [False, True, False, False, False, True, True]
    assert [json.loads(r.body)["type"] for r in got] == [
        "job.progress", "job.progress", "job.completed"]


async def test_unknown_events_and_default_events() -> None:
    webhooks = make_webhooks(AddressPolicy(allow=LOOPBACK))
    with pytest.raises(ValueError, match="unknown webhook events"):
        await webhooks.subscribe("job", "http://127.0.0.1:9/x", ["finished"], Principal("k"))
    sub = await webhooks.subscribe("job", "http://127.0.0.1:9/x", [], Principal("k"))
    assert sub.events == {"completed"}


def test_backoff_grows_with_jitter_and_retry_after_parses() -> None:
    delays = [backoff_seconds(n, 1.0, 60.0) for n in (1, 2, 3, 8)]
    assert 0.5 <= delays[0] <= 1 and 1 <= delays[1] <= 2 and 2 <= delays[2] <= 4
    assert 30 <= delays[3] <= 60
    assert retry_after_seconds("7", 0) == 7
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470) == 10
    assert retry_after_seconds("soon", 0) is None


def test_the_guard_itself_stops_traffic_off_loopback(guard: LoopbackOnly) -> None:
    import socket
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("10.255.255.1", 9))
    with pytest.raises(OSError):
        socket.getaddrinfo("example.com", 80)
    assert guard.refused == ["10.255.255.1", "example.com"]
