"""Suite-wide settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

# Tests run small tensors; with two intra-op threads on a 2-core machine that other processes
# also use (Ray workers, CI), torch spends more time synchronising threads than computing.
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ray_local() -> Iterator[str]:
    """A private local Ray (2 CPUs) for a module's tests; yields its address. Modules that
    need it say `pytestmark = pytest.mark.usefixtures("ray_local")`. Left running when a
    module found Ray already up."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()
