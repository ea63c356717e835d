"""Stand-in pytorch_lightning (1.4 API) for recording DoSSR fixtures: a LightningModule that is an nn.Module.

The official models subclass pl.LightningModule only for training plumbing; sampling needs `device`,
`freeze` and a no-op `log`. The real 1.4.2 package does not import beside torch 2.13.
"""
import random

import numpy as np
import torch


class LightningModule(torch.nn.Module):
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def log(self, *args, **kwargs) -> None:
        pass

    def freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad = False
        self.eval()


def seed_everything(seed: int) -> int:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed
