import omnillm_sim
import omnillm_sim.errors


def test_all_is_sorted_and_importable() -> None:
    for module in (omnillm_sim, omnillm_sim.errors):
        names = list(module.__all__)
        assert names == sorted(names, key=str.casefold) or names == sorted(names)
        for name in names:
            assert hasattr(module, name), name


def test_public_names_are_pinned() -> None:
    assert set(omnillm_sim.__all__) == {
        "BudgetExceeded",
        "BudgetStats",
        "BudgetTracker",
        "ConfigError",
        "Estimate",
        "EstimateRequest",
        "InvalidValueError",
        "InvariantViolation",
        "MicroDollar",
        "ModelPrice",
        "OmniLLMError",
        "PriceTable",
        "Reservation",
        "ReservationStateError",
        "ScenarioError",
        "TraceError",
        "UnknownModelError",
        "Usage",
        "__version__",
        "catalogue",
        "format_usd",
        "get_estimator",
        "micro_to_usd",
        "usd_to_micro",
    }


def test_every_error_is_an_omnillm_error_and_value_errors_are_value_errors() -> None:
    e = omnillm_sim.errors
    for name in e.__all__:
        assert issubclass(getattr(e, name), e.OmniLLMError)
    for cls in (
        e.InvalidValueError,
        e.ConfigError,
        e.ScenarioError,
        e.TraceError,
        e.UnknownModelError,
    ):
        assert issubclass(cls, ValueError)


def test_error_messages_carry_their_data() -> None:
    e = omnillm_sim.errors
    err = e.ScenarioError("scenarios/x.toml", "workload.rate", 'a rate like "20/s"', "fast")
    assert str(err) == "scenarios/x.toml: workload.rate: expected a rate like \"20/s\", got 'fast'"
    t = e.TraceError("t.csv", 7, "ContextTokens", "an integer >= 0", "x1")
    assert str(t) == "t.csv:7: column 'ContextTokens': expected an integer >= 0, got 'x1'"
    assert (t.path, t.line, t.column, t.got) == ("t.csv", 7, "ContextTokens", "x1")
