"""Stand-in torchvision.utils: make_grid is imported by ldm's ddpm.py but never called when sampling."""


def make_grid(*args, **kwargs):
    raise NotImplementedError("stand-in torchvision: make_grid is not available")
