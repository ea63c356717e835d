"""Stand-in torchvision.transforms.functional: imported by open_clip, never called here."""


def __getattr__(name):
    raise NotImplementedError(f"stand-in torchvision: transforms.functional.{name} is not available")
