"""Export one member of a ``--population`` checkpoint as an ordinary single-seed checkpoint, which
``validate``, ``test`` and ``MetaRLModule.load_from_checkpoint`` take like any other (it also carries the
member's optimizer, data and evaluation state).

    python -m lightning_meta_rl.export runs/pop/checkpoints/last.ckpt --seed 3   # -> runs/pop/seed_3/last.ckpt
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import torch

from lightning_meta_rl.checkpoint import read_checkpoint
from lightning_meta_rl.config import MetaConfig, StudentConfig, TeacherConfig
from lightning_meta_rl.errors import UserError
from lightning_meta_rl.members import LAYOUT, layers_of, to_plain
from lightning_meta_rl.module import MetaRLModule


def export_member(checkpoint: dict[str, Any], seed: int) -> dict[str, Any]:
    """The single-seed checkpoint of the population member trained with ``seed``."""
    population = checkpoint.get("population")
    if population is None:
        raise UserError("this checkpoint is not a population's (no 'population' entry): it is already a single run")
    seeds = list(population["seeds"])
    if seed not in seeds:
        raise UserError(f"seed {seed} is not a member of this population (its seeds: {seeds[0]}..{seeds[-1]})")
    k, n = seeds.index(seed), len(seeds)
    retired = {int(i): why for i, why in population.get("retired", {}).items()}
    if k in retired:
        raise UserError(
            f"seed {seed} was retired ({retired[k]}): its weights were cleared, so there is no student to export. "
            f"Its results up to then are in seed_{seed}/metrics.csv."
        )
    hparams = {key: v for key, v in checkpoint["hyper_parameters"].items() if key != "population"}
    groups = {"student": StudentConfig, "teacher": TeacherConfig, "meta": MetaConfig}
    built = {
        key: groups[key](**v) if key in groups and isinstance(v, dict) else v
        for key, v in hparams.items()
        if key != "_instantiator"  # how LightningCLI rebuilds the module on loading: kept in the export
    }
    single = MetaRLModule(**built)
    reference = single.state_dict()  # the single student's names and shapes
    # the stacked student's parameters hold each member in the members' layout (members.py), or, in
    # checkpoints written before it (layout 1), in the ordinary layers' layout
    transposed = population.get("member_layout", 1) == LAYOUT
    names = [f"student.{n}" for n, _ in single.student.named_parameters()]
    layers = dict(zip(names, layers_of(single.student), strict=True))

    def member(name: str, tensor: torch.Tensor) -> torch.Tensor:
        shape = reference[name].shape
        if transposed and name in layers and tensor.dim() > 0 and tensor.shape[0] == n:
            tensor = to_plain(*layers[name], tensor[k])
        elif tensor.shape == (n, *shape):
            tensor = tensor[k]
        if tensor.shape == shape:
            return tensor.clone(memory_format=torch.contiguous_format)
        raise UserError(f"'{name}' has shape {tuple(tensor.shape)}; a member's should be {tuple(shape)}")

    teacher = f"explorations.{k}."  # member k's teacher (Meta arm), an ordinary run's "exploration."
    state = checkpoint["state_dict"]
    state_dict = {}
    for name in reference:
        own = teacher + name.removeprefix("exploration.") if name.startswith("exploration.") else name
        if own in state or name in state:
            state_dict[name] = member(name, state[own if own in state else name])
    optimizers = []
    student_opts, teacher_opts = checkpoint["optimizer_states"][:2], checkpoint["optimizer_states"][2:]

    def adam_member(layer: tuple[torch.nn.Module, str], key: str, v: torch.Tensor) -> torch.Tensor:
        """Member k's part of an Adam state tensor: moments [n, ...]; step counts [n] (or one per tensor, before
        members kept their own)."""
        if key == "step":
            return v[k].clone() if v.dim() == 1 else v.clone()
        return (to_plain(*layer, v[k]) if transposed else v[k]).clone(memory_format=torch.contiguous_format)

    for net, opt in zip((single.student.actor, single.student.critic), student_opts, strict=True):
        net_layers = layers_of(net)
        states = {
            i: {key: adam_member(net_layers[int(i)], key, v) for key, v in s.items()} for i, s in opt["state"].items()
        }
        optimizers.append({"state": states, "param_groups": opt["param_groups"]})
    if teacher_opts:
        optimizers.append(teacher_opts[k])
    data = checkpoint["PopulationDataModule"]["members"][k]
    meta = dict(checkpoint["meta_rl"])
    meta["evaluation"] = population["evaluations"][k]
    meta["exploration"] = population["explorations"][k]
    if "credits" in population:
        meta["credit"], meta["meta_reward"] = population["credits"][k], population["meta_stats"][k]
        meta["r_pi"] = population["r_pis"][k]
    keep = ("epoch", "global_step", "pytorch-lightning_version", "loops", "callbacks", "lr_schedulers", "hparams_name")
    out = {key: checkpoint[key] for key in keep if key in checkpoint}
    return out | {
        "state_dict": state_dict,
        "optimizer_states": optimizers,
        "hyper_parameters": hparams,
        "RolloutDataModule": data,
        "meta_rl": meta,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lightning_meta_rl.export", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a population's checkpoint (its checkpoints/last.ckpt)")
    parser.add_argument("--seed", type=int, required=True, help="the member's seed")
    parser.add_argument("--out", default=None, help="default: <run_dir>/seed_<seed>/last.ckpt")
    args = parser.parse_args(argv)
    try:
        if not os.path.isfile(args.checkpoint):
            raise UserError(f"no checkpoint file at '{args.checkpoint}'")
        read_checkpoint(args.checkpoint)  # a clear message for a file that is not a checkpoint
        exported = export_member(torch.load(args.checkpoint, map_location="cpu", weights_only=False), args.seed)
        run_dir = os.path.dirname(os.path.dirname(os.path.abspath(args.checkpoint)))
        out = args.out or os.path.join(run_dir, f"seed_{args.seed}", "last.ckpt")
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        torch.save(exported, out + ".tmp")
        os.replace(out + ".tmp", out)
    except UserError as exc:
        print(f"lightning-meta-rl: error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"lightning-meta-rl: seed {args.seed} exported to {out}")


if __name__ == "__main__":
    main()
