"""``python -m clprompt.pretrain``: contrastive pretraining of the mini-CLIP on the sandbox world.

The recipe is ``configs/pretrain.yaml``; the training is ``clprompt/miniclip_pretraining.py``. The
command composes the config (``--cfg job``, ``--help``) before torch and open_clip are loaded.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from clprompt import config_dir


@hydra.main(config_path=config_dir(), config_name="pretrain", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from clprompt.miniclip_pretraining import pretrain   # torch and open_clip load after the config is composed

    pretrain(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
