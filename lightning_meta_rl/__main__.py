"""``python -m lightning_meta_rl fit --config conf/hopper.yaml``."""

from lightning_meta_rl.cli import main

if __name__ == "__main__":
    main()
