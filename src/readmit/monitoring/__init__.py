"""The production loop: the prediction log, outcomes, and (later) drift and live performance."""
