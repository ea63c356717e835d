"""Stand-in pytorch_lightning.utilities.distributed: rank_zero_only as the identity decorator (one process)."""


def rank_zero_only(fn):
    return fn
