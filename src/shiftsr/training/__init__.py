"""Training: DoSSR domain-shift training of small SR models (accelerate, EMA, resumable)."""
