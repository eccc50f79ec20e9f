"""clprompt: continual-learning simulation of prompt tuning for frozen CLIP models."""

import warnings
from pathlib import Path

__version__ = "0.1.0"

# Avalanche imports qpsolvers for GEM, which warns on import when no QP solver is installed; clprompt never
# solves a QP (no GEM), so the warning would only alarm users.
warnings.filterwarnings("ignore", message="no QP solver found", category=UserWarning)


def config_dir() -> str:
    """The Hydra configs: the repository's top-level ``configs/`` when clprompt runs from a checkout (or an
    editable install of one), else the copy installed with the package (``clprompt/configs``)."""
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / "configs", package / "configs"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"clprompt's configs are missing: neither {package.parent / 'configs'} nor "
                            f"{package / 'configs'} holds config.yaml; reinstall clprompt")
