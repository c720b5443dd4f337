"""Suite-wide settings."""

from __future__ import annotations

import torch

# Tests run small tensors; with two intra-op threads on a 2-core machine that other processes
# also use (Ray workers, CI), torch spends more time synchronising threads than computing.
torch.set_num_threads(1)
