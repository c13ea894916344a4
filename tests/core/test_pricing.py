import pytest
from hypothesis import given
from hypothesis import strategies as st

from omnillm_sim.errors import ConfigError, InvalidValueError, UnknownModelError
from omnillm_sim.estimate import EstimateRequest, get_estimator, prompt_token_bound
from omnillm_sim.pricing import Usage, catalogue

OMNILLM = catalogue("omnillm-0.1.5")
CURRENT = catalogue("current")


# -- omnillm 0.1.5: the crate's own unit-test values (reference section 6) ----------------------


def test_omnillm_estimate_unit_value() -> None:
    est = get_estimator("omnillm").estimate(
        EstimateRequest(model="gpt-5.4", prompt_bytes=3_996, max_output_tokens=1), OMNILLM
    )
    assert est.tokens == 1_000  # 3996 // 4 + 1
    assert est.cost == 2_500


@pytest.mark.parametrize(
    ("model", "usage", "expected"),
    [
        ("gpt-5.4", Usage(input_tokens=600, output_tokens=100, cache_read_tokens=400), 3_100),
        (
            "claude-3-5-sonnet",
            Usage(
                input_tokens=100,
                output_tokens=50,
                cache_read_tokens=1_000,
                cache_write_tokens=2_000,
            ),
            8_850,
        ),
        (
            "claude-sonnet-4-5",
            Usage(
                input_tokens=0,
                output_tokens=0,
                cache_write_tokens=1_000,
                cache_write_1h_tokens=1_000,
            ),
            9_750,
        ),
    ],
)
def test_omnillm_actual_unit_values(model: str, usage: Usage, expected: int) -> None:
    assert OMNILLM.cost(model, usage) == expected


def test_omnillm_unknown_model_needs_the_explicit_fallback() -> None:
    with pytest.raises(UnknownModelError, match=r"gpt-4\.1-mini"):
        OMNILLM.cost("gpt-4.1-mini", Usage(1_000, 0))
    faithful = catalogue("omnillm-0.1.5", fallback="gpt-4o")
    assert faithful.cost("gpt-4.1-mini", Usage(1_000, 0)) == 5_000


def test_omnillm_prefix_order_first_match_wins() -> None:
    assert OMNILLM.price("gpt-4o-mini-2024").rates.input == 150_000
    assert OMNILLM.price("gpt-5.4-mini").rates.input == 750_000
    assert OMNILLM.price("gpt-5.4-pro").rates.input == 2_500_000


def test_omnillm_gpt4o_example_from_the_reference() -> None:
    # reference section 5: 100 prompt tokens, max_output 1024 -> est 5,620; actual 15,860.
    est = get_estimator("omnillm").estimate(
        EstimateRequest(model="gpt-4o", prompt_bytes=400, max_output_tokens=1024), OMNILLM
    )
    assert est.cost == 5_620
    assert OMNILLM.cost("gpt-4o", Usage(input_tokens=100, output_tokens=1_024)) == 15_860


def test_omnillm_floors_tiny_requests_to_zero() -> None:
    assert OMNILLM.cost("gpt-4o-mini", Usage(input_tokens=6, output_tokens=0)) == 0


# -- current: cross-check against genai-prices' own Decimal computation ------------------------


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o",
        "gpt-4o-mini",
        "claude-sonnet-4-5",
        "claude-3-5-haiku",
        "gpt-5.4",
        "gemini-2.5-pro",
        "o3",
    ],
)
@given(
    inp=st.integers(0, 400_000),
    out=st.integers(0, 50_000),
    read=st.integers(0, 50_000),
    write=st.integers(0, 50_000),
)
def test_current_matches_genai_prices(
    model: str, inp: int, out: int, read: int, write: int
) -> None:
    from genai_prices import Usage as GUsage
    from genai_prices import calc_price

    price = CURRENT.price(model)
    if price.rates.cache_write is None:
        write = 0
    ours = CURRENT.cost(model, Usage(inp, out, cache_read_tokens=read, cache_write_tokens=write))
    theirs = calc_price(
        GUsage(
            input_tokens=inp + read + write,
            output_tokens=out,
            cache_read_tokens=read,
            cache_write_tokens=write,
        ),
        model,
    ).total_price
    # Ours rounds the exact total up to a whole micro-dollar, once.
    assert ours == int((theirs * 10**6).to_integral_value(rounding="ROUND_CEILING"))


def test_current_well_known_prices() -> None:
    assert CURRENT.price("gpt-4o-mini").rates.input == 150_000
    assert CURRENT.cost("gpt-4o", Usage(1_000_000, 1_000_000)) > 0


def test_unknown_model_raises_unless_fallback() -> None:
    with pytest.raises(UnknownModelError, match=r"model\(='no-such-model-xyz'\)"):
        CURRENT.price("no-such-model-xyz")
    assert catalogue("current", fallback="gpt-4o").price("no-such-model-xyz").rates.input > 0


@pytest.mark.parametrize("bad", ["", "   ", None, 3])
def test_bad_model_names(bad: object) -> None:
    with pytest.raises(InvalidValueError, match="model"):
        CURRENT.price(bad)  # type: ignore[arg-type]


def test_unknown_catalogue_and_fallback_fail_at_construction() -> None:
    with pytest.raises(ConfigError, match="catalogue"):
        catalogue("nope")
    with pytest.raises(UnknownModelError):
        catalogue("omnillm-0.1.5", fallback="nope")


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_usage_rejects_bad_counts(bad: object) -> None:
    with pytest.raises(InvalidValueError, match="input_tokens"):
        Usage(bad, 0)  # type: ignore[arg-type]


# -- overrides ----------------------------------------------------------------------------------


def test_toml_overrides(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "prices.toml"
    f.write_text('[models."my-model"]\ninput = "2.50"\noutput = 10\ncache_read = "$0.25"\n')
    table = catalogue("omnillm-0.1.5", overrides=f)
    assert table.cost("my-model", Usage(1_000_000, 1_000_000, cache_read_tokens=1_000_000)) == (
        2_500_000 + 10_000_000 + 250_000
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[models."m"]\ninput = "x"\noutput = "1"\n', "models.m.input"),
        ('[models."m"]\ninput = "-1"\noutput = "1"\n', "models.m.input"),
        ('[models."m"]\ninput = "1"\n', "models.m.output"),
        ('[models."m"]\ninput = "1"\noutput = "1"\ncache_reed = "1"\n', "models.m.cache_reed"),
        ("[modells]\n", "modells"),
        ("not toml = = =", "not valid TOML"),
    ],
)
def test_bad_overrides_name_file_and_key(tmp_path, text: str, fragment: str) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "prices.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        catalogue("current", overrides=f)
    assert str(f) in str(info.value) and fragment in str(info.value)


# -- estimates ----------------------------------------------------------------------------------


@pytest.mark.parametrize("table", [OMNILLM, CURRENT], ids=["omnillm", "current"])
@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4-5", "gpt-5.4"])
@given(data=st.data())
def test_upper_bound_estimate_covers_every_usage_within_bounds(table, model, data) -> None:  # type: ignore[no-untyped-def]
    prompt_bytes = data.draw(st.integers(0, 400_000), label="prompt_bytes")
    messages = data.draw(st.integers(1, 20), label="messages")
    max_out = data.draw(st.integers(0, 64_000), label="max_output")
    est = get_estimator("upper-bound").estimate(
        EstimateRequest(
            model=model, prompt_bytes=prompt_bytes, max_output_tokens=max_out, messages=messages
        ),
        table,
    )
    assert est.bounded
    bound = prompt_token_bound(prompt_bytes, messages)
    parts = data.draw(st.lists(st.integers(0, bound), min_size=4, max_size=4), label="split")
    # Split at most `bound` prompt tokens over uncached input, cache reads, writes, 1h writes.
    cuts = sorted(parts)
    usage = Usage(
        input_tokens=cuts[0],
        cache_read_tokens=cuts[1] - cuts[0],
        cache_write_tokens=cuts[2] - cuts[1],
        cache_write_1h_tokens=cuts[3] - cuts[2],
        output_tokens=data.draw(st.integers(0, max_out), label="output"),
    )
    assert usage.prompt_tokens <= bound
    assert table.cost(model, usage) <= est.cost


def test_upper_bound_without_output_bound_is_marked_unbounded() -> None:
    est = get_estimator("upper-bound", default_max_output=100).estimate(
        EstimateRequest(model="gpt-4o", prompt_bytes=10), CURRENT
    )
    assert not est.bounded and est.output_tokens == 100


def test_upper_bound_estimate_is_exact_worst_case_for_gpt4o() -> None:
    # Independent arithmetic: bound = 1000 bytes + 8*2 messages + 16 = 1032 tokens at $2.50/M,
    # plus 500 output tokens at $10/M = 2580 + 5000 micro-dollars.
    est = get_estimator("upper-bound").estimate(
        EstimateRequest(model="gpt-4o", prompt_bytes=1_000, messages=2, max_output_tokens=500),
        CURRENT,
    )
    assert CURRENT.price("gpt-4o").rates.input == 2_500_000
    assert est.cost == 2_580 + 5_000


def test_omnillm_estimate_is_not_an_upper_bound() -> None:
    est = get_estimator("omnillm").estimate(
        EstimateRequest(model="gpt-4o", prompt_bytes=400, max_output_tokens=1024), OMNILLM
    )
    assert not est.bounded
    assert OMNILLM.cost("gpt-4o", Usage(100, 1024)) > est.cost


def test_unknown_estimator_and_bad_requests() -> None:
    with pytest.raises(ConfigError, match="estimator"):
        get_estimator("guess")
    with pytest.raises(InvalidValueError, match="prompt_bytes"):
        EstimateRequest(model="gpt-4o", prompt_bytes=-1)
    with pytest.raises(InvalidValueError, match="model"):
        EstimateRequest(model="")
