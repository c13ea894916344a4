"""The gateway state machines: budget invariants I1-I5 under the safe policy; under the
faithful policy I1 and I3 hold and I2 fails only through underestimates (shown to fail)."""

from gateway_helpers import make_gateway, req

from omnillm_sim.gateway import Admission, ok
from omnillm_sim.pricing import Usage
from omnillm_sim.verify.gateway_machines import GatewayMachine


class SafeGatewayMachine(GatewayMachine):
    policy = "safe"


class FaithfulGatewayMachine(GatewayMachine):
    policy = "omnillm-0.1.5"


TestSafeGateway = SafeGatewayMachine.TestCase
TestFaithfulGateway = FaithfulGatewayMachine.TestCase


def test_faithful_violates_i2_through_an_underestimate() -> None:
    # The machine's I2 check is conditional; this shows the condition is reached.
    gw = make_gateway("omnillm-0.1.5", limit=10_000)
    a = gw.admit(req(1, out=1_000), 0.0)
    assert isinstance(a, Admission)
    gw.finish(a, ok(Usage(100, 1_000)), 1.0)
    s = gw.budget.stats()
    assert s.used == 500 + 15_000 > s.limit
    assert s.underestimated == 15_500 - (100 + 1_000) * 5
