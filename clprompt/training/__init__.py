"""The training loop: the Avalanche strategy, the compiled text step, checkpoints, torchrun, stop signals."""
