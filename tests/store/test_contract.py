"""The contract every backend keeps, run against each of them with the same tests."""

import asyncio

import pytest

from store import StoreFull, Swept, artifact_id
from tests.store.conftest import FakeClock, MakeStore

PNG = "image/png"


async def test_put_then_get_returns_the_bytes_and_metadata(
    make_store: MakeStore, clock: FakeClock
) -> None:
    store = make_store()
    token, artifact = await store.put(b"payload", PNG, 60)

    assert artifact.id == artifact_id(token) != token
    assert (artifact.content_type, artifact.size) == (PNG, 7)
    assert (artifact.created_at, artifact.expires_at) == (clock.now, clock.now + 60)
    assert await store.get(token) == (artifact, b"payload")
    assert await store.head(token) == artifact
    assert artifact.seconds_left(clock.now + 45) == 15
    assert artifact.seconds_left(clock.now + 61) == 0


async def test_tokens_are_fresh_and_url_safe(make_store: MakeStore) -> None:
    store = make_store()
    tokens = {(await store.put(b"x", PNG, 60))[0] for _ in range(20)}

    assert len(tokens) == 20
    for token in tokens:
        assert len(token) >= 32
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


async def test_unknown_token_is_none(make_store: MakeStore) -> None:
    store = make_store()
    await store.put(b"x", PNG, 60)

    assert await store.get("no-such-token") is None
    assert await store.head("no-such-token") is None
    assert await store.delete("no-such-token") is False


async def test_expired_is_never_served_even_before_a_sweep(
    make_store: MakeStore, clock: FakeClock
) -> None:
    store = make_store()
    token, _ = await store.put(b"x", PNG, 10)

    clock.tick(9.999)
    assert await store.get(token) is not None
    clock.tick(0.001)
    assert await store.get(token) is None
    assert await store.head(token) is None
    assert (await store.stats()).expired_total == 2


def ids(swept: list[Swept]) -> list[str]:
    return [item.artifact_id for item in swept]


async def test_sweep_removes_exactly_the_expired(make_store: MakeStore, clock: FakeClock) -> None:
    store = make_store()
    short_token, short = await store.put(b"short", PNG, 10)
    _, shorter = await store.put(b"shorter", PNG, 5)
    long_token, long = await store.put(b"long", PNG, 100)

    assert ids(await store.sweep()) == []
    clock.tick(10)
    assert sorted(ids(await store.sweep())) == sorted([short.id, shorter.id])
    assert ids(await store.sweep()) == []
    assert await store.get(short_token) is None
    assert await store.get(long_token) == (long, b"long")
    stats = await store.stats()
    assert (stats.count, stats.bytes, stats.swept_total) == (1, 4, 2)


async def test_sweep_takes_an_explicit_now(make_store: MakeStore, clock: FakeClock) -> None:
    store = make_store()
    _, artifact = await store.put(b"x", PNG, 10)

    assert ids(await store.sweep(clock.now + 9)) == []
    assert ids(await store.sweep(clock.now + 10)) == [artifact.id]


async def test_sweep_reports_each_expiry(make_store: MakeStore, clock: FakeClock) -> None:
    store = make_store()
    made = [(await store.put(b"x", PNG, ttl))[1] for ttl in (10, 7, 11)]

    swept = await store.sweep(clock.now + 12)
    assert sorted((s.artifact_id, s.expires_at) for s in swept) == sorted(
        (artifact.id, artifact.expires_at) for artifact in made)


async def test_a_sweep_removes_more_than_fits_in_one_pass(
    make_store: MakeStore, clock: FakeClock
) -> None:
    """More expired artifacts than one chunk of the Redis sweep (500): all go in one sweep."""
    store = make_store()
    made = [(await store.put(b"x", PNG, 10))[1] for _ in range(1001)]
    kept, _ = await store.put(b"kept", PNG, 60)

    clock.tick(10)
    swept = await store.sweep()
    assert sorted(ids(swept)) == sorted(artifact.id for artifact in made)
    stats = await store.stats()
    assert (stats.count, stats.bytes) == (1, 4)
    assert await store.get(kept) is not None


async def test_a_deleted_artifact_does_not_hold_up_the_sweep_of_later_ones(
    make_store: MakeStore, clock: FakeClock
) -> None:
    """Deleted first-to-expire artifacts leave stale index entries; the sweep passes them."""
    store = make_store()
    deleted = [(await store.put(b"d", PNG, ttl))[0] for ttl in (5, 6)]
    _, later = await store.put(b"later", PNG, 10)
    for token in deleted:
        assert await store.delete(token) is True

    clock.tick(10)
    assert ids(await store.sweep()) == [later.id]
    stats = await store.stats()
    assert (stats.count, stats.bytes, stats.swept_total) == (0, 0, 1)


async def test_delete_removes_at_once(make_store: MakeStore, clock: FakeClock) -> None:
    store = make_store()
    token, _ = await store.put(b"x", PNG, 10)

    assert await store.delete(token) is True
    assert await store.get(token) is None
    assert await store.delete(token) is False
    clock.tick(10)
    assert ids(await store.sweep()) == []
    assert (await store.stats()).count == 0


async def test_full_store_refuses_and_keeps_what_it_holds(
    make_store: MakeStore, clock: FakeClock
) -> None:
    store = make_store(max_bytes=1000)
    token, artifact = await store.put(b"a" * 600, PNG, 60)

    with pytest.raises(StoreFull):
        await store.put(b"b" * 401, PNG, 60)
    assert await store.get(token) == (artifact, b"a" * 600)
    stats = await store.stats()
    assert (stats.count, stats.bytes, stats.max_bytes) == (1, 600, 1000)
    await store.put(b"c" * 400, PNG, 60)  # exactly at the budget fits


async def test_concurrent_puts_honour_each_others_reservations(make_store: MakeStore) -> None:
    """Two puts in flight at once must not both fit by each seeing only what is stored."""
    store = make_store(max_bytes=1000)

    results = await asyncio.gather(store.put(b"a" * 600, PNG, 60), store.put(b"b" * 600, PNG, 60),
                                   return_exceptions=True)

    assert sorted(type(result).__name__ for result in results) == ["StoreFull", "tuple"]
    stats = await store.stats()
    assert (stats.count, stats.bytes) == (1, 600)
    await store.put(b"c" * 400, PNG, 60)  # the failed put's reservation was given back
    with pytest.raises(StoreFull):
        await store.put(b"d", PNG, 60)


async def test_reservations_add_up_while_puts_are_in_flight(make_store: MakeStore) -> None:
    """Three puts at once into 1000 bytes: 300 + 300 + 500 cannot all be held."""
    store = make_store(max_bytes=1000)

    results = await asyncio.gather(
        *(store.put(bytes(size), PNG, 60) for size in (300, 300, 500)), return_exceptions=True)

    assert sorted(type(result).__name__ for result in results) == ["StoreFull", "tuple", "tuple"]
    held = sum(result[1].size for result in results if isinstance(result, tuple))
    stats = await store.stats()
    assert (stats.count, stats.bytes) == (2, held)
    await store.put(bytes(1000 - held), PNG, 60)  # every reservation was settled exactly
    with pytest.raises(StoreFull):
        await store.put(b"d", PNG, 60)


async def test_expired_artifacts_make_room(make_store: MakeStore, clock: FakeClock) -> None:
    store = make_store(max_bytes=1000)
    await store.put(b"a" * 600, PNG, 10)
    clock.tick(10)

    token, _ = await store.put(b"b" * 600, PNG, 60)
    assert await store.get(token) is not None
    assert (await store.stats()).bytes == 600


async def test_delete_frees_budget(make_store: MakeStore) -> None:
    store = make_store(max_bytes=1000)
    token, _ = await store.put(b"a" * 600, PNG, 60)
    await store.delete(token)

    await store.put(b"b" * 1000, PNG, 60)
    assert (await store.stats()).bytes == 1000


async def test_shorten_all_caps_and_never_extends(make_store: MakeStore, clock: FakeClock) -> None:
    store = make_store()
    long_token, long = await store.put(b"long", PNG, 100)
    short_token, short = await store.put(b"short", PNG, 10)

    assert await store.shorten_all(50) == 1
    assert (await store.head(long_token)).expires_at == clock.now + 50  # type: ignore[union-attr]
    assert await store.head(short_token) == short
    assert await store.shorten_all(1000) == 0
    assert (await store.head(long_token)).expires_at == clock.now + 50  # type: ignore[union-attr]
    assert long.expires_at == clock.now + 100  # the artifact handed out is not mutated


async def test_shorten_all_caps_each_tag_by_its_own_limit(
    make_store: MakeStore, clock: FakeClock
) -> None:
    store = make_store()
    fast_token, _ = await store.put(b"fast", PNG, 100, tag="fast")
    other_token, _ = await store.put(b"other", PNG, 100, tag="other")
    untagged_token, _ = await store.put(b"untagged", PNG, 100)

    assert await store.shorten_all(80, by_tag={"fast": 30, "slow": 500}) == 3
    heads = [await store.head(t) for t in (fast_token, other_token, untagged_token)]
    assert [h.expires_at - clock.now for h in heads if h] == [30, 80, 80]
    assert [h.tag for h in heads if h] == ["fast", "other", ""]
    assert await store.shorten_all(1000, by_tag={"fast": 10}) == 1


async def test_shortened_artifact_expires_and_is_swept_once(
    make_store: MakeStore, clock: FakeClock
) -> None:
    store = make_store()
    token, artifact = await store.put(b"x", PNG, 100)
    await store.shorten_all(20, now=clock.now + 5)

    assert (await store.head(token)).expires_at == clock.now + 25  # type: ignore[union-attr]
    clock.tick(24.999)
    assert await store.get(token) is not None  # capped from the given now, not the clock's
    clock.tick(0.001)
    assert await store.get(token) is None
    assert ids(await store.sweep()) == [artifact.id]
    clock.tick(100)
    assert ids(await store.sweep()) == []


async def test_shortening_to_the_same_lifetime_changes_nothing(
    make_store: MakeStore, clock: FakeClock
) -> None:
    store = make_store()
    token, artifact = await store.put(b"x", PNG, 100)

    assert await store.shorten_all(100) == 0
    assert await store.head(token) == artifact


@pytest.mark.parametrize("max_bytes", [0, -1])
async def test_a_budget_must_be_positive(make_store: MakeStore, max_bytes: int) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        make_store(max_bytes=max_bytes)


async def test_the_smallest_budget_holds_one_byte(make_store: MakeStore) -> None:
    store = make_store(max_bytes=1)
    await store.put(b"x", PNG, 60)
    with pytest.raises(StoreFull):
        await store.put(b"y", PNG, 60)


async def test_a_ttl_change_never_revives(make_store: MakeStore, clock: FakeClock) -> None:
    store = make_store()
    token, artifact = await store.put(b"x", PNG, 10)
    clock.tick(11)

    assert await store.shorten_all(10_000) == 0
    assert await store.get(token) is None
    assert ids(await store.sweep()) == [artifact.id]


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf")])
async def test_bad_ttl_is_refused(make_store: MakeStore, ttl: float) -> None:
    store = make_store()
    with pytest.raises(ValueError, match="ttl_seconds"):
        await store.put(b"x", PNG, ttl)
    assert (await store.stats()).count == 0


async def test_ping_and_close(make_store: MakeStore) -> None:
    store = make_store()
    assert await store.ping() is True
    empty = await store.stats()
    assert (empty.count, empty.bytes, empty.expired_total, empty.swept_total) == (0, 0, 0, 0)
