"""Forward processes: every method is a Gaussian path q(x_t | x0, y) = N(a x0 + b y, s^2 I)."""
from .base import GaussianProcess
from .domain_shift import DomainShiftProcess
from .residual_shift import ResShiftProcess
from .start import NOISE_TABLE_FILE, NoiseTable, load_noise_table, recoverable_time, start_state, start_time
from .vp import VPProcess, make_betas

PROCESSES = {"vp": VPProcess, "domain_shift": DomainShiftProcess, "resshift": ResShiftProcess}


def build_process(config: dict) -> GaussianProcess:
    """Rebuild a process from its saved config dict {"kind": ..., **kwargs}."""
    config = dict(config)
    kind = config.pop("kind")
    if kind not in PROCESSES:
        raise ValueError(f"unknown process kind {kind!r}; allowed: {', '.join(PROCESSES)}")
    return PROCESSES[kind](**config)


def process_config(process: GaussianProcess) -> dict:
    """The saved config of a process, inverse of build_process."""
    kind = next(k for k, cls in PROCESSES.items() if type(process) is cls)
    return {"kind": kind, **process.config}


__all__ = ["GaussianProcess", "VPProcess", "DomainShiftProcess", "ResShiftProcess", "make_betas",
           "build_process", "process_config", "PROCESSES",
           "NOISE_TABLE_FILE", "NoiseTable", "load_noise_table", "recoverable_time", "start_state", "start_time"]
