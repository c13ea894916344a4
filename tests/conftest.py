"""Suite-wide settings: Hypothesis without deadlines (shared, noisy machines; speed is
measured in benchmarks/, never asserted in tests)."""

import os

from hypothesis import HealthCheck, settings

# pytester runs for the pytest plugin (tests/plugin). pytest accepts pytest_plugins only in the
# top-level conftest.
pytest_plugins = ["pytester"]

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "soak", deadline=None, max_examples=2_000, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
