from __future__ import annotations

import pytest

from semcache.errors import ConfigError
from semcache.levers.routing import FailureKind, Router, RoutingRules, classify_failure

RULES = RoutingRules.from_mapping(
    {
        "tasks": {"summarize": "cheap", "code": "claude-sonnet-4-5"},
        "aliases": {"cheap": "gpt-4o-mini", "smart": "gpt-4.1"},
        "fallbacks": {"gpt-4.1": ["claude-sonnet-4-5", "cheap"], "gpt-4o-mini": ["gpt-4.1-mini"]},
    }
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plan_resolves_tasks_aliases_and_fallbacks() -> None:
    router = Router(RULES)
    assert router.plan("smart") == ["gpt-4.1", "claude-sonnet-4-5", "gpt-4o-mini"]
    assert router.plan("gpt-4o", task="summarize") == ["gpt-4o-mini", "gpt-4.1-mini"]
    assert router.plan("smart", task="unknown-task") == router.plan("smart")
    assert router.plan("gpt-4o") == ["gpt-4o"]


def test_cool_down_after_consecutive_failures_then_expiry() -> None:
    clock = FakeClock()
    router = Router(RULES, failure_threshold=2, cooldown_s=30, clock=clock)
    assert router.report_failure("gpt-4.1", FailureKind.SERVER_ERROR)
    router.report_success("gpt-4.1")  # a success in between resets the run
    router.report_failure("gpt-4.1", FailureKind.TIMEOUT)
    assert router.plan("smart")[0] == "gpt-4.1"
    router.report_failure("gpt-4.1", FailureKind.OVERLOADED)
    assert router.plan("smart") == ["claude-sonnet-4-5", "gpt-4o-mini"]
    clock.now = 31
    assert router.plan("smart")[0] == "gpt-4.1"
    # A failed probe after the cool-down cools it again at once.
    router.report_failure("gpt-4.1", FailureKind.SERVER_ERROR)
    assert router.cooling_down("gpt-4.1")


def test_all_cooling_still_probes_the_soonest() -> None:
    clock = FakeClock()
    router = Router(RULES, failure_threshold=1, cooldown_s=30, clock=clock)
    router.report_failure("gpt-4o-mini", FailureKind.SERVER_ERROR)
    clock.now = 5
    router.report_failure("gpt-4.1-mini", FailureKind.SERVER_ERROR)
    assert router.plan("cheap") == ["gpt-4o-mini"]


def test_which_failures_fall_back() -> None:
    router = Router(RULES, failure_threshold=1)
    assert not router.report_failure("gpt-4.1", FailureKind.CLIENT_ERROR)
    assert router.report_failure("gpt-4.1", FailureKind.CONTEXT_LENGTH)
    assert not router.cooling_down("gpt-4.1")  # neither says the model is unhealthy
    assert router.report_failure("gpt-4.1", FailureKind.RATE_LIMITED)
    assert router.cooling_down("gpt-4.1")


@pytest.mark.parametrize(
    ("status", "code", "message", "timeout", "kind"),
    [
        (500, None, "", False, FailureKind.SERVER_ERROR),
        (502, None, "", False, FailureKind.SERVER_ERROR),
        (503, None, "", False, FailureKind.OVERLOADED),
        (529, None, "Overloaded", False, FailureKind.OVERLOADED),
        (504, None, "", False, FailureKind.TIMEOUT),
        (None, None, "", True, FailureKind.TIMEOUT),
        (None, None, "", False, FailureKind.OVERLOADED),
        (429, None, "", False, FailureKind.RATE_LIMITED),
        (400, "context_length_exceeded", "", False, FailureKind.CONTEXT_LENGTH),
        (
            400,
            None,
            "prompt is too long: 250000 tokens > 200000 maximum",
            False,
            FailureKind.CONTEXT_LENGTH,
        ),
        (400, None, "messages: field required", False, FailureKind.CLIENT_ERROR),
        (401, None, "", False, FailureKind.CLIENT_ERROR),
        (404, None, "", False, FailureKind.CLIENT_ERROR),
    ],
)
def test_classify_failure(
    status: int | None, code: str | None, message: str, timeout: bool, kind: FailureKind
) -> None:
    assert classify_failure(status, code=code, message=message, timeout=timeout) is kind


def test_bad_rules_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        RoutingRules.from_mapping({"fallbacks": {"a": "b"}})
    with pytest.raises(ConfigError):
        RoutingRules.from_mapping({"routes": {}})
