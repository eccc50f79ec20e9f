"""clprompt: continual-learning simulation of prompt tuning for frozen CLIP models."""

__version__ = "0.1.0"
