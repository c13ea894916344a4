import pytest
from hypothesis import given
from hypothesis import strategies as st

from omnillm_sim.errors import ConfigError, InvalidValueError, UnknownModelError
from omnillm_sim.estimate import EstimateRequest, get_estimator, prompt_token_bound
from omnillm_sim.money import seed_usd_to_micro
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


# -- omnillm 0.1.5 by wire shape: every prefix of the crate's table (pricing.rs 79-163) --------

# The crate's per-1k USD literals (pricing.rs `pricing()`), converted as it does with
# `(usd * 1e6) as u64`: (input, cached input, cache read, 5m write, 1h write, output).
CRATE_ROWS = {
    "gpt-5.5": (0.005, 0.0005, None, None, None, 0.030),
    "gpt-5.4-mini": (0.000750, 0.000075, None, None, None, 0.004500),
    "gpt-5.4": (0.002500, 0.000250, None, None, None, 0.015000),
    "gpt-4o-mini": (0.000150, None, None, None, None, 0.000600),
    "gpt-4o": (0.005, None, None, None, None, 0.015),
    "claude-opus-4": (0.005, None, 0.00050, 0.00625, 0.010, 0.025),
    "claude-sonnet-4": (0.003, None, 0.00030, 0.00375, 0.006, 0.015),
    "claude-3-5-sonnet": (0.003, None, 0.00030, 0.00375, 0.006, 0.015),
    "claude-haiku-4": (0.001, None, 0.00010, 0.00125, 0.002, 0.005),
    "claude-3-haiku": (0.00025, None, 0.00003, 0.00030, 0.00050, 0.00125),
}


@pytest.mark.parametrize("prefix", sorted(CRATE_ROWS))
def test_omnillm_rates_are_the_crates_literals(prefix: str) -> None:
    inp, cached, read, w5, w1h, out = CRATE_ROWS[prefix]
    rates = OMNILLM.price(prefix).rates
    per_1k = {  # our rates are µ$ per million tokens: whole µ$ per 1k, as the crate's u64
        "input": inp, "output": out, "cache_write": w5, "cache_write_1h": w1h,
        "cache_read": cached if cached is not None else read,
    }
    for name, literal in per_1k.items():
        ours = getattr(rates, name)
        if literal is None:
            assert ours is None, name
        else:
            assert ours % 1_000 == 0 and ours // 1_000 == seed_usd_to_micro(literal), name


OPENAI_SHAPED = Usage(6_000, 1_000, cache_read_tokens=4_000, shape="openai")  # prompt 10,000
ANTHROPIC_SHAPED = Usage(1_000, 1_000, 10_000, 2_000, 3_000, shape="anthropic")


# Hand-computed from the crate's formula and per-1k rates (floor per component):
# OpenAI shape: uncached x in + cached x cached_in (rows with a cached-input rate), else
# prompt x in; Anthropic shape: input x in (+ read, 5m, 1h writes on Claude rows only).
@pytest.mark.parametrize(
    ("model", "openai", "anthropic"),
    [
        ("gpt-5.5", 30_000 + 2_000 + 30_000, 5_000 + 30_000),
        ("gpt-5.4-mini-2026-03-17", 4_500 + 300 + 4_500, 750 + 4_500),
        ("gpt-5.4", 15_000 + 1_000 + 15_000, 2_500 + 15_000),
        ("gpt-4o-mini-2024-07-18", 1_500 + 600, 150 + 600),
        ("gpt-4o-2024-08-06", 50_000 + 15_000, 5_000 + 15_000),
        ("claude-opus-4-1-20250805", 50_000 + 25_000, 5_000 + 5_000 + 12_500 + 30_000 + 25_000),
        ("claude-sonnet-4-5-20250929", 30_000 + 15_000, 3_000 + 3_000 + 7_500 + 18_000 + 15_000),
        ("claude-3-5-sonnet-20241022", 30_000 + 15_000, 3_000 + 3_000 + 7_500 + 18_000 + 15_000),
        ("claude-haiku-4-5", 10_000 + 5_000, 1_000 + 1_000 + 2_500 + 6_000 + 5_000),
        ("claude-3-haiku-20240307", 2_500 + 1_250, 250 + 300 + 600 + 1_500 + 1_250),
        # the catch-all row ($5 / $15, no cache rates)
        ("claude-3-7-sonnet-20250219", 50_000 + 15_000, 5_000 + 15_000),
        ("claude-3-5-haiku-20241022", 50_000 + 15_000, 5_000 + 15_000),
        ("claude-3-opus-20240229", 50_000 + 15_000, 5_000 + 15_000),
        ("gpt-4.1", 50_000 + 15_000, 5_000 + 15_000),
        ("o3", 50_000 + 15_000, 5_000 + 15_000),
    ],
)
def test_omnillm_prices_each_wire_shape_as_the_crate(
    model: str, openai: int, anthropic: int
) -> None:
    table = catalogue("omnillm-0.1.5", fallback="gpt-4o")
    assert table.cost(model, OPENAI_SHAPED) == openai
    assert table.cost(model, ANTHROPIC_SHAPED) == anthropic


def test_omnillm_shape_examples_from_the_issue() -> None:
    table = catalogue("omnillm-0.1.5", fallback="gpt-4o")
    # catch-all row: Anthropic cache tokens are free (an unshaped usage charges them: 65,000)
    anthropic = Usage(100, 300, cache_read_tokens=10_000, cache_write_tokens=2_000)
    assert table.cost("claude-3-7-sonnet-20250219", anthropic) == 65_000
    shaped = Usage(100, 300, cache_read_tokens=10_000, cache_write_tokens=2_000,
                   shape="anthropic")
    assert table.cost("claude-3-7-sonnet-20250219", shaped) == 5_000
    # OpenAI-shaped cached tokens on a Claude row: the whole prompt at the input rate
    openai = Usage(200, 100, cache_read_tokens=800, shape="openai")
    assert table.cost("claude-sonnet-4-5", openai) == 4_500


def test_omnillm_floors_each_component_of_a_shaped_usage() -> None:
    # 7 x 0.25 = 1.75 -> 1; 333 x 0.03 = 9.99 -> 9; 3 x 0.3 -> 0; 1 x 0.5 -> 0; 1 x 1.25 -> 1
    assert OMNILLM.cost("claude-3-haiku", Usage(7, 1, 333, 3, 1, shape="anthropic")) == 11
    # 2 x 0.75 = 1.5 -> 1; 999 x 0.075 = 74.925 -> 74; 3 x 4.5 = 13.5 -> 13
    assert OMNILLM.cost("gpt-5.4-mini", Usage(2, 3, 999, shape="openai")) == 88


@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4-5", "gpt-5.4", "claude-3-5-haiku"])
def test_current_prices_every_shape_alike(model: str) -> None:
    counts = (1_000, 200, 3_000, 400, 0)
    base = CURRENT.cost(model, Usage(*counts))
    for shape in ("openai", "anthropic"):
        assert CURRENT.cost(model, Usage(*counts, shape=shape)) == base  # type: ignore[arg-type]


def test_usage_shape_is_checked_and_not_part_of_equality() -> None:
    assert Usage(1, 2, shape="openai") == Usage(1, 2)
    with pytest.raises(InvalidValueError, match="shape"):
        Usage(1, 2, shape="gemini")  # type: ignore[arg-type]
