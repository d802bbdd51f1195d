"""QueueState: the pure queue, driven without threads, an event loop or a clock."""

from __future__ import annotations

import threading

import pytest

from imagegen.batcher import MAX_YIELDS, Batcher, Lane, QueueFull, QueueState, Ticket
from imagegen.types import GenerationRequest, Queued, QueueEvent, SamplingParams, Started
from service.settings import Settings, SettingsError

SMALL = SamplingParams("shapes", 32, 32, 2, 3.0)
LARGE = SamplingParams("shapes", 64, 64, 2, 3.0)


def ticket(name: str, params: SamplingParams = SMALL, n: int = 1,
           lane: Lane = Lane.INTERACTIVE, seed: int = 0) -> Ticket:
    request = GenerationRequest(request_id=name, params=params, prompt=f"prompt {name}",
                                negative_prompt=None, num_images=n, seed=seed)
    return Ticket(request=request, lane=lane)


def ids(batch: list[Ticket]) -> list[str]:
    return [t.id for t in batch]


def test_a_lone_ticket_is_a_batch_of_one() -> None:
    state = QueueState(capacity=4)
    state.append(ticket("a"))
    assert ids(state.next_micro_batch(lambda model: 8)) == ["a"]
    assert len(state) == 0
    assert state.next_micro_batch(lambda model: 8) == []


def test_compatible_tickets_join_one_batch_and_keep_their_own_seed_and_prompt() -> None:
    state = QueueState(capacity=8)
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        state.append(ticket(name, seed=seed))
    batch = state.next_micro_batch(lambda model: 8)
    assert ids(batch) == ["a", "b", "c"]
    assert [t.request.seed for t in batch] == [1, 2, 3]
    assert [t.request.prompt for t in batch] == ["prompt a", "prompt b", "prompt c"]


def test_incompatible_tickets_wait_for_their_own_batch_in_order() -> None:
    state = QueueState(capacity=8)
    state.append(ticket("a", SMALL))
    state.append(ticket("b", LARGE))
    state.append(ticket("c", SMALL))
    state.append(ticket("d", LARGE))
    assert ids(state.next_micro_batch(lambda model: 8)) == ["a", "c"]
    assert ids(state.next_micro_batch(lambda model: 8)) == ["b", "d"]


@pytest.mark.parametrize("field", ["width", "num_inference_steps", "guidance_scale", "model"])
def test_any_differing_sampling_parameter_splits_batches(field: str) -> None:
    other = {"width": 64, "num_inference_steps": 3, "guidance_scale": 5.0, "model": "other"}
    changed = SamplingParams(**{**{f: getattr(SMALL, f) for f in SMALL.__slots__},
                                field: other[field]})
    state = QueueState(capacity=8)
    state.append(ticket("a", SMALL))
    state.append(ticket("b", changed))
    assert ids(state.next_micro_batch(lambda model: 8)) == ["a"]
    assert ids(state.next_micro_batch(lambda model: 8)) == ["b"]


def test_a_batch_holds_at_most_max_images_counting_each_requests_n() -> None:
    state = QueueState(capacity=8)
    state.append(ticket("a", n=2))
    state.append(ticket("b", n=2))
    state.append(ticket("c", n=1))
    state.append(ticket("d", n=1))
    # a(2) + b(2) fill 4 of 5; c(1) fits; d no longer does.
    assert ids(state.next_micro_batch(lambda model: 5)) == ["a", "b", "c"]
    assert ids(state.next_micro_batch(lambda model: 5)) == ["d"]


def test_a_smaller_request_behind_one_that_does_not_fit_still_joins() -> None:
    state = QueueState(capacity=8)
    state.append(ticket("a", n=3))
    state.append(ticket("b", n=3))
    state.append(ticket("c", n=1))
    assert ids(state.next_micro_batch(lambda model: 4)) == ["a", "c"]
    assert ids(state.next_micro_batch(lambda model: 4)) == ["b"]


def test_the_limit_is_asked_per_model() -> None:
    state = QueueState(capacity=8)
    other = SamplingParams("other", 32, 32, 2, 3.0)
    for name in "abc":
        state.append(ticket(name, other))
    limits = {"shapes": 8, "other": 2}
    assert ids(state.next_micro_batch(limits.__getitem__)) == ["a", "b"]


def test_interactive_goes_before_bulk_and_they_never_share_a_batch() -> None:
    state = QueueState(capacity=8)
    state.append(ticket("bulk1", lane=Lane.BULK))
    state.append(ticket("live1"))
    state.append(ticket("bulk2", lane=Lane.BULK))
    state.append(ticket("live2"))
    assert ids(state.next_micro_batch(lambda model: 8)) == ["live1", "live2"]
    assert ids(state.next_micro_batch(lambda model: 8)) == ["bulk1", "bulk2"]


def test_each_lane_is_bounded_on_its_own() -> None:
    state = QueueState(capacity=2)
    state.append(ticket("a"))
    state.append(ticket("b"))
    with pytest.raises(QueueFull):
        state.append(ticket("c"))
    state.append(ticket("bulk", lane=Lane.BULK))
    assert len(state) == 3
    assert state.depth(Lane.INTERACTIVE) == 2
    assert state.depth(Lane.BULK) == 1


def test_positions_count_interactive_first_and_removal_closes_the_gap() -> None:
    state = QueueState(capacity=8)
    assert state.append(ticket("bulk", lane=Lane.BULK)) == 1
    assert state.append(ticket("a")) == 1
    assert state.append(ticket("b")) == 2
    assert state.position("bulk") == 3
    removed = state.remove("a")
    assert removed is not None and removed.id == "a"
    assert state.position("b") == 1
    assert state.position("bulk") == 2
    assert state.position("a") is None
    assert state.remove("a") is None


def test_a_full_queue_has_room_again_once_a_batch_is_taken() -> None:
    state = QueueState(capacity=2)
    state.append(ticket("a"))
    state.append(ticket("b"))
    state.next_micro_batch(lambda model: 8)
    state.append(ticket("c"))
    assert ids(state.next_micro_batch(lambda model: 8)) == ["c"]


def test_next_micro_batch_is_full_when_no_more_images_fit() -> None:
    state = QueueState(capacity=8)
    assert not state.next_micro_batch_is_full(lambda model: 3)
    state.append(ticket("a", n=2))
    assert not state.next_micro_batch_is_full(lambda model: 3)
    state.append(ticket("b", LARGE))  # incompatible: does not fill a's batch
    assert not state.next_micro_batch_is_full(lambda model: 3)
    state.append(ticket("c", n=1))
    assert state.next_micro_batch_is_full(lambda model: 3)
    assert len(state) == 3  # asking takes nothing


# --- Batcher.take: the gather wait, with a real worker thread ------------------------------


def take_in_thread(batcher: Batcher, timeout: float) -> tuple[threading.Thread, list[Ticket]]:
    taken: list[Ticket] = []
    thread = threading.Thread(target=lambda: taken.extend(batcher.take(timeout)))
    thread.start()
    return thread, taken


def test_a_lone_request_on_an_idle_device_never_waits_for_company() -> None:
    batcher = Batcher(8, lambda model: 4, gather_seconds=600)
    thread, taken = take_in_thread(batcher, timeout=600)
    batcher.submit(ticket("a"))
    thread.join(60)  # liveness bound only: a gather wait would hold it for 600 s
    assert not thread.is_alive()
    assert ids(taken) == ["a"]


def test_requests_queued_behind_a_busy_device_gather_until_the_batch_is_full() -> None:
    batcher = Batcher(8, lambda model: 3, gather_seconds=600)
    batcher.submit(ticket("a"))  # queued while the device was busy
    thread, taken = take_in_thread(batcher, timeout=600)
    batcher.submit(ticket("b"))
    batcher.submit(ticket("c"))
    thread.join(60)
    assert not thread.is_alive()
    assert ids(taken) == ["a", "b", "c"]


def test_without_a_gather_wait_the_queued_request_runs_alone() -> None:
    batcher = Batcher(8, lambda model: 3, gather_seconds=0)
    batcher.submit(ticket("a"))
    assert ids(batcher.take(timeout=600)) == ["a"]


@pytest.mark.parametrize("raw", ["-0.1", "2", "soon"])
def test_a_bad_batch_wait_setting_names_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError, match="IMAGEGEN_BATCH_WAIT"):
        Settings.load(environ={"IMAGEGEN_BATCH_WAIT": raw})


def test_the_batch_wait_defaults_to_20_ms_and_reads_its_env_var() -> None:
    settings = Settings.load(environ={"IMAGEGEN_BATCH_WAIT": "0.05"})
    assert settings.batch_wait == 0.05
    assert Settings.load(environ={}).batch_wait == 0.02


# --- What the queue pushes, and when a bulk micro-batch gives way --------------------------


def listened(name: str, lane: Lane = Lane.INTERACTIVE) -> tuple[Ticket, list[QueueEvent]]:
    seen: list[QueueEvent] = []
    t = ticket(name, lane=lane)
    t.on_queue = seen.append
    return t, seen


def test_positions_and_starts_are_pushed_as_they_change_and_only_then() -> None:
    batcher = Batcher(8, lambda model: 1)
    (a, seen_a), (b, seen_b), (c, seen_c) = (listened(n) for n in "abc")
    bulk, seen_bulk = listened("bulk", Lane.BULK)
    for t in (bulk, a, b, c):
        batcher.submit(t)
    assert seen_bulk == [Queued(1), Queued(2), Queued(3), Queued(4)]  # interactive goes first
    assert (seen_a, seen_b, seen_c) == ([Queued(1)], [Queued(2)], [Queued(3)])

    assert batcher.take(timeout=0) == [a]
    assert seen_a == [Queued(1), Started()] and a.started
    assert (seen_b[-1], seen_c[-1], seen_bulk[-1]) == (Queued(1), Queued(2), Queued(3))
    assert batcher.cancel_queued("b") is b
    assert (seen_c[-1], seen_bulk[-1]) == (Queued(1), Queued(2))
    assert len(seen_b) == 2  # nothing more for a ticket that left the queue


def test_a_bulk_micro_batch_gives_way_only_to_interactive_work_on_its_own_device() -> None:
    own, other = Batcher(8, lambda model: 1), Batcher(8, lambda model: 1)
    bulk, seen = listened("bulk", Lane.BULK)
    bulk.timeout_seconds = 60
    own.submit(bulk)
    assert own.take(timeout=0) == [bulk]
    assert bulk.deadline is not None  # a bulk line's time on the device runs from its start

    other.submit(ticket("elsewhere"))
    assert not own.should_yield([bulk])  # another device's queue is no reason to stop
    own.submit(ticket("live"))
    assert own.should_yield([bulk])
    assert own.should_yield([ticket("interactive-running")]) is False

    assert own.give_way([bulk]) == []
    assert (bulk.started, bulk.deadline, bulk.yields) == (False, None, 1)
    assert seen[-1] == Queued(2)  # back in the queue, first in its lane
    assert ids(own.take(timeout=0)) == ["live"]
    assert ids(own.take(timeout=0)) == ["bulk"] and seen[-1] == Started()


def test_a_bulk_ticket_gives_way_a_bounded_number_of_times() -> None:
    batcher = Batcher(8, lambda model: 1)
    bulk = ticket("bulk", lane=Lane.BULK)
    batcher.submit(bulk)
    batcher.submit(ticket("live"))
    bulk.yields = MAX_YIELDS
    assert not batcher.should_yield([bulk])  # it has given way enough: it runs to the end


def test_a_canceled_bulk_ticket_is_not_queued_again() -> None:
    batcher = Batcher(8, lambda model: 2)
    kept, canceled = ticket("kept", lane=Lane.BULK), ticket("canceled", lane=Lane.BULK)
    for t in (kept, canceled):
        batcher.submit(t)
    assert batcher.take(timeout=0) == [kept, canceled]
    canceled.cancel_requested = True
    assert batcher.give_way([kept, canceled]) == [canceled]
    assert batcher.depth(Lane.BULK) == 1
