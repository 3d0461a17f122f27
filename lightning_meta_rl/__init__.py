"""Learning to Explore via Meta-Policy Gradient (Xu et al., ICML 2018) as a Lightning trainer."""

import torch

from lightning_meta_rl.datamodule import RolloutDataModule
from lightning_meta_rl.module import MetaConfig, MetaRLModule, StudentConfig, TeacherConfig

# A model built in Python stores these dataclasses in its checkpoint's hyperparameters; allowing them lets
# torch.load(weights_only=True) (Lightning's default for load_from_checkpoint) read such a checkpoint.
torch.serialization.add_safe_globals([MetaConfig, StudentConfig, TeacherConfig])

__all__ = ["MetaConfig", "MetaRLModule", "RolloutDataModule", "StudentConfig", "TeacherConfig"]
