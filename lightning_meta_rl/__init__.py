"""Learning to Explore via Meta-Policy Gradient (Xu et al., ICML 2018) as a Lightning trainer."""

from lightning_meta_rl.datamodule import RolloutDataModule
from lightning_meta_rl.module import MetaConfig, MetaRLModule, StudentConfig, TeacherConfig

__all__ = ["MetaConfig", "MetaRLModule", "RolloutDataModule", "StudentConfig", "TeacherConfig"]
