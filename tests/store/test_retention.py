"""Retention policy: what a request may ask for, what operators may set, and the audit line."""

import logging
import re

import pytest

from store.retention import (
    MAX_LIFETIME_SECONDS,
    MIN_LIFETIME_SECONDS,
    MemoryRetentionHolder,
    ModelRetention,
    RetentionPolicy,
    TTLRejected,
)

POLICY = RetentionPolicy(
    default_ttl_seconds=600,
    max_ttl_seconds=3600,
    models={"tiny": ModelRetention(default_ttl_seconds=60, max_ttl_seconds=120)},
    batch_retention_seconds=1800,
)


def test_ttl_defaults_to_the_models_default() -> None:
    assert POLICY.ttl_for("tiny", None) == 60
    assert POLICY.ttl_for("other", None) == 600


@pytest.mark.parametrize(("model", "requested"), [("tiny", 1), ("tiny", 60), ("other", 599.5)])
def test_a_request_may_shorten(model: str, requested: float) -> None:
    assert POLICY.ttl_for(model, requested) == requested


@pytest.mark.parametrize("requested", [0, 0.5, 61, -5, float("nan"), float("inf")])
def test_a_request_may_not_lengthen_or_vanish(requested: float) -> None:
    with pytest.raises(TTLRejected, match=r"ttl_seconds must be between 1 and 60"):
        POLICY.ttl_for("tiny", requested)


def test_dict_round_trip_has_the_api_shape() -> None:
    data = POLICY.to_dict()
    assert data == {
        "default_ttl_seconds": 600,
        "max_ttl_seconds": 3600,
        "models": {"tiny": {"default_ttl_seconds": 60, "max_ttl_seconds": 120}},
        "batch_retention_seconds": 1800,
    }
    assert RetentionPolicy.from_dict(data) == POLICY
    assert RetentionPolicy.from_json(POLICY.to_json()) == POLICY


def test_a_partial_update_keeps_the_rest() -> None:
    updated = RetentionPolicy.from_dict({"default_ttl_seconds": 30}, base=POLICY)
    assert updated.default_ttl_seconds == 30
    assert (updated.max_ttl_seconds, updated.models) == (3600, POLICY.models)


def test_a_model_override_inherits_missing_limits() -> None:
    policy = RetentionPolicy.from_dict(
        {
            "default_ttl_seconds": 10,
            "max_ttl_seconds": 100,
            "models": {"m": {"max_ttl_seconds": 50}},
        }
    )
    assert policy.models["m"] == ModelRetention(10, 50)
    assert policy.batch_retention_seconds == 3600


BASE = {"default_ttl_seconds": 1, "max_ttl_seconds": 2}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"default_ttl_seconds": 10}, "max_ttl_seconds"),
        ({"default_ttl_seconds": 200, "max_ttl_seconds": 100}, "default_ttl_seconds"),
        ({"default_ttl_seconds": 0, "max_ttl_seconds": 100}, "default_ttl_seconds"),
        ({"default_ttl_seconds": "10", "max_ttl_seconds": 100}, "default_ttl_seconds"),
        ({"default_ttl_seconds": True, "max_ttl_seconds": 100}, "default_ttl_seconds"),
        ({"default_ttl_seconds": 10, "max_ttl_seconds": -1}, "max_ttl_seconds"),
        ({"default_ttl_seconds": 1, "max_ttl_seconds": 2, "ttl": 3}, "ttl"),
        ({"default_ttl_seconds": 1, "max_ttl_seconds": 2, "models": []}, "models"),
        (
            {
                "default_ttl_seconds": 1,
                "max_ttl_seconds": 2,
                "models": {"m": {"default_ttl_seconds": 9}},
            },
            "models.m.default_ttl_seconds",
        ),
        (
            {"default_ttl_seconds": 1, "max_ttl_seconds": 2, "batch_retention_seconds": 0},
            "batch_retention_seconds",
        ),
        # A model's own fields are named with their full path, whatever is wrong with them.
        ({**BASE, "models": {"m": 5}}, "models.m must be an object"),
        ({**BASE, "models": {"m": {"ttl": 1}}}, "models.m.ttl"),
        ({**BASE, "models": {"m": {"default_ttl_seconds": "1"}}}, "models.m.default_ttl_seconds"),
        ({**BASE, "models": {"m": {"max_ttl_seconds": True}}}, "models.m.max_ttl_seconds"),
        ({**BASE, "batch_retention_seconds": "60"}, "batch_retention_seconds"),
        ({"max_ttl_seconds": 2}, "default_ttl_seconds is required"),
    ],
)
def test_a_bad_policy_names_the_field(data: dict, field: str) -> None:
    # The message starts with the field's full name: nothing before it, nothing lost.
    with pytest.raises(ValueError, match="^" + re.escape(field)):
        RetentionPolicy.from_dict(data)


def test_a_policy_is_a_json_object() -> None:
    with pytest.raises(ValueError, match="^retention policy must be a JSON object$"):
        RetentionPolicy.from_dict([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"default_ttl_seconds": 10, "max_ttl_seconds": 5},
         "default_ttl_seconds (10) must not exceed max_ttl_seconds (5)"),
        ({"default_ttl_seconds": 0.5, "max_ttl_seconds": 5},
         "default_ttl_seconds must be between 1 and 3.1536e+07 seconds"),
        ({"default_ttl_seconds": 5, "max_ttl_seconds": 365 * 86400 + 1},
         "max_ttl_seconds must be between 1 and 3.1536e+07 seconds"),
        ({"default_ttl_seconds": 5, "max_ttl_seconds": 5, "batch_retention_seconds": 0.99},
         "batch_retention_seconds must be between 1 and 3.1536e+07 seconds"),
        ({"default_ttl_seconds": 5, "max_ttl_seconds": 5,
          "models": {"m": ModelRetention(default_ttl_seconds=9, max_ttl_seconds=5)}},
         "models.m.default_ttl_seconds (9) must not exceed models.m.max_ttl_seconds (5)"),
        ({"default_ttl_seconds": 5, "max_ttl_seconds": 5,
          "models": {"m": ModelRetention(default_ttl_seconds=0, max_ttl_seconds=5)}},
         "models.m.default_ttl_seconds must be between 1 and 3.1536e+07 seconds"),
        ({"default_ttl_seconds": 5, "max_ttl_seconds": 5,
          "models": {"m": ModelRetention(default_ttl_seconds=5, max_ttl_seconds=4e7)}},
         "models.m.max_ttl_seconds must be between 1 and 3.1536e+07 seconds"),
    ],
)
def test_an_invalid_policy_cannot_be_built(fields: dict, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        RetentionPolicy(**fields)
    assert str(refused.value) == message


def test_the_bounds_themselves_are_allowed() -> None:
    """One second and one year, default equal to maximum, for the policy and a model."""
    year = MAX_LIFETIME_SECONDS
    assert (MIN_LIFETIME_SECONDS, year) == (1.0, 365 * 86400.0)
    for low, high in ((1, 1), (year, year), (1, year)):
        policy = RetentionPolicy(
            default_ttl_seconds=low, max_ttl_seconds=high,
            models={"m": ModelRetention(low, high)}, batch_retention_seconds=low,
        )
        assert policy.for_model("m") == ModelRetention(low, high)
        longest_batch = RetentionPolicy(low, high, batch_retention_seconds=high)
        assert longest_batch.batch_retention_seconds == high


def test_a_model_without_an_override_has_the_policy_wide_limits() -> None:
    assert POLICY.for_model("other") == ModelRetention(600, 3600)
    assert POLICY.for_model("tiny") == ModelRetention(60, 120)


async def test_a_change_is_one_audit_line_with_actor_old_and_new(
    caplog: pytest.LogCaptureFixture,
) -> None:
    holder = MemoryRetentionHolder(POLICY)
    new = RetentionPolicy(default_ttl_seconds=30, max_ttl_seconds=60)

    with caplog.at_level(logging.INFO, logger="imagegen.audit"):
        old = await holder.set(new, actor="admin")

    assert old == POLICY
    assert await holder.get() == new == holder.current
    [record] = caplog.records
    assert record.name == "imagegen.audit"
    message = record.getMessage()
    assert message == f"retention changed by admin: old={POLICY.to_json()} new={new.to_json()}"
