"""What one EvaluationVideo recording costs: rendering and encoding of one episode of an untrained student.

python benchmarks/video_cost.py [--repeats 3]

Writes benchmarks/results/video/video_cost.md (medians over repeats; the first render of each environment,
which builds the renderer, is reported on its own).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from callbacks.video import EvaluationVideo, write_mp4
from lightning_meta_rl.datamodule import RolloutDataModule
from lightning_meta_rl.module import MetaRLModule

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "video"
CASES = [("Pendulum-v1", False), ("HalfCheetah-v5", False), ("HalfCheetah-v5", True)]  # long episodes even untrained


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = [
        "# Cost of one recording",
        "",
        f"`python benchmarks/video_cost.py --repeats {args.repeats}`: one deterministic episode of an untrained "
        "student (default EvaluationVideo settings: 256x256 MuJoCo frames, about 30 fps of simulated time, at "
        "most 1000 frames), CPU rendering (EGL on llvmpipe here), medians of the repeats.",
        "",
        "| environment | shadows | frames | first render incl. renderer set-up (s) | render (s) | encode mp4 (s) | render + encode per frame (ms) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    tmp = Path(tempfile.mkdtemp())
    for env_id, shadows in CASES:
        data = RolloutDataModule(env_id=env_id, total_env_steps=2000, warmup_steps=10)
        data.setup("fit")
        torch.manual_seed(0)
        module = MetaRLModule(data.obs_dim, data.act_dim, data.action_low, data.action_high)
        cb = EvaluationVideo(shadows=shadows)
        t = time.perf_counter()
        frames, fps = cb.render_episodes(module, data)
        first = time.perf_counter() - t
        render, encode = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            frames, fps = cb.render_episodes(module, data)
            render.append(time.perf_counter() - t)
            t = time.perf_counter()
            write_mp4(str(tmp / "v.mp4"), frames, fps)
            encode.append(time.perf_counter() - t)
        cb._close()
        data.teardown("fit")
        row = (
            f"| {env_id} | {'on' if shadows else 'off'} | {len(frames)} | {first:.2f} | "
            f"{statistics.median(render):.2f} | {statistics.median(encode):.2f} | "
            f"{1000 * (statistics.median(render) + statistics.median(encode)) / len(frames):.1f} |"
        )
        lines.append(row)
        print(row, flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "video_cost.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
