"""Official checkpoints (ResShift, SinSR, DoSSR, guided-diffusion ADM) read and converted into shiftsr bundles."""
