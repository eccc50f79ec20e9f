"""What a run records: the accuracy matrix (evaluation), metrics, training log, task identification, gradient ratio, outputs."""
