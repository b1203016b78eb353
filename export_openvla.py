"""Export a trained policy as a full OpenVLA checkpoint in the released format, in one file.

What it does. An RL checkpoint (PPO, GRPO or REINFORCE: a LoRA adapter in peft format, a value head and
`openvla_rl.json`) is loaded onto the base model it was trained on and merged into it (peft's
`merge_and_unload`); a full checkpoint (`sft_openvla.py`'s output) is re-written as it is. Either way
the output has the files of `openvla/openvla-7b`: config.json with `norm_stats` (all of the base's,
the run's `unnorm_key` among them), bf16 safetensors shards under the released tensor names, the
tokenizer (written so that tokenizers 0.19 reads it too), preprocessor_config.json and, when the base
ships them, the released remote-code files (`*_prismatic.py`, copied unchanged). So the export loads
wherever openvla-7b loads, e.g. in OpenVLA's deploy server, SimplerEnv or LIBERO evaluation:

    processor = AutoProcessor.from_pretrained(out, trust_remote_code=True)
    vla = AutoModelForVision2Seq.from_pretrained(out, torch_dtype=torch.bfloat16, trust_remote_code=True)
    action = vla.predict_action(**processor(prompt, image).to("cuda:0", dtype=torch.bfloat16),
                                unnorm_key=<the key this script prints>, do_sample=False)

and here with `load_vla(out)` or `--vla-path out` in every script. The value head is not part of that
format and is left out. The output is written into a temporary directory that is renamed at the end, so
a failure never leaves a half-written export.

Deviations:
1. A run trained with `--load-in-4bit` learnt its LoRA against NF4-rounded base weights. There are no
   bf16 weights to merge into inside a 4-bit model, so the adapter is merged into a bf16 load of the same
   base (as OpenVLA's finetune.py does for its 4-bit runs, and `sft_openvla.py` here): the export's
   greedy actions can differ slightly from the 4-bit run's. A base stored in 4-bit (a config.json with
   `quantization_config`) is refused, naming the fix: pass the bf16 checkpoint it was quantised from.
2. The merge runs in the base's bf16 with the fp32 LoRA delta added in fp32 and rounded once.

Usage:
    python export_openvla.py --checkpoint runs/<run>/checkpoints/iter_000100 --output-dir exported/ppo
    python export_openvla.py --checkpoint runs/<run> --output-dir exported/ppo      # its newest checkpoint
    python export_openvla.py --checkpoint checkpoints/sft-openvla --output-dir exported/sft
    # the base is elsewhere now (the run recorded another path, or a hub id and you are offline)
    python export_openvla.py --checkpoint runs/<run> --vla-path ./openvla-7b --output-dir exported/ppo
    # a 7B merge on a GPU instead of the CPU (the CPU needs ~16 GB of RAM)
    python export_openvla.py --checkpoint runs/<run> --output-dir exported/ppo --device cuda
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

from openvla_patch import OpenVLAError, action_stats, load_vla, read_config, resolve_vla_path, save_pretrained

# ---------------------------------------------------------------------------------------------------
# Args
# ---------------------------------------------------------------------------------------------------


@dataclass
class Args:
    checkpoint: str
    """what to export: an RL checkpoint directory (openvla_rl.json + LoRA adapter), an RL run directory
    (-> its newest checkpoints/iter_*), or a full checkpoint directory (e.g. sft_openvla.py's output)"""
    output_dir: str
    """where the exported checkpoint is written; must not exist (see --overwrite)"""
    vla_path: str | None = None
    """RL checkpoints only: the base model the adapter was trained on (hub id, directory or `tiny`;
    default: the vla_path recorded in its openvla_rl.json)"""
    overwrite: bool = False
    """replace --output-dir if it already holds a checkpoint (never any other directory)"""
    device: str = "cpu"
    """where the model is loaded and merged: cpu or cuda"""


RL_INFO_FILE = "openvla_rl.json"

# ---------------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------------


def find_checkpoint(path: Path) -> tuple[str, Path]:
    """--checkpoint -> ("adapter" or "full", directory); a run directory -> its newest finished checkpoint."""
    if not path.is_dir():
        raise OpenVLAError(f"--checkpoint {path} does not exist")
    if not (path / RL_INFO_FILE).exists() and (path / "checkpoints").is_dir():
        iters = [p for p in (path / "checkpoints").glob("iter_*") if p.name.removeprefix("iter_").isdigit()]
        if not iters:
            raise OpenVLAError(f"run directory {path} holds no finished checkpoints/iter_* yet")
        path = max(iters, key=lambda p: int(p.name.removeprefix("iter_")))
    if (path / RL_INFO_FILE).exists():
        return "adapter", path
    if (path / "config.json").exists():
        return "full", path
    raise OpenVLAError(f"--checkpoint {path} is neither an RL checkpoint ({RL_INFO_FILE}) nor a full "
                       "checkpoint (config.json)")


def export(args: Args) -> Path:
    """Write the export of `args.checkpoint` to `args.output_dir` -> the output directory."""
    kind, checkpoint = find_checkpoint(Path(args.checkpoint).expanduser())
    output = Path(args.output_dir).expanduser()
    if output.exists() and not (args.overwrite and (output / "config.json").exists()):
        raise OpenVLAError(f"--output-dir {output} exists; pick another directory"
                           + (" (--overwrite only replaces a checkpoint)" if args.overwrite else
                              " or pass --overwrite to replace it"))
    if output.resolve() == checkpoint.resolve():
        raise OpenVLAError("--output-dir is the checkpoint itself; pick another directory")
    if kind == "adapter":
        info = json.loads((checkpoint / RL_INFO_FILE).read_text())
        base = resolve_vla_path(args.vla_path or info["vla_path"])
        unnorm_key = info.get("unnorm_key")
        trained_in_4bit = info.get("args", {}).get("load_in_4bit", False)
    else:
        if args.vla_path is not None:
            raise OpenVLAError(f"--vla-path is for RL checkpoints; {checkpoint} is a full checkpoint already")
        base, unnorm_key, trained_in_4bit = checkpoint, None, False
    quantization = read_config(base).extra.get("quantization_config")
    if quantization is not None:
        method = quantization.get("quant_method", "quantization_config")
        raise OpenVLAError(f"the base {base} is stored quantised ({method}), so there are no bf16 weights to "
                           "merge into: pass --vla-path the bf16 checkpoint it was quantised from (e.g. "
                           "openvla/openvla-7b)")

    adapter = checkpoint if kind == "adapter" else None
    model, processor = load_vla(str(base), device=args.device, dtype=torch.bfloat16, adapter_path=adapter,
                                trainable_adapter=False)
    if unnorm_key is not None:
        action_stats(model.config, unnorm_key)  # the run decoded with these statistics: the export holds them
    if kind == "adapter":
        if trained_in_4bit:
            print("note: this run trained on a 4-bit base; its LoRA is merged into the bf16 base weights, so "
                  "greedy actions can differ slightly from the 4-bit run's")
        # W += scale * B @ A: peft adds the fp32 delta in place, so each bf16 weight is rounded once
        model.language_model = model.language_model.merge_and_unload()
    output.parent.mkdir(parents=True, exist_ok=True)
    save_pretrained(model, processor.tokenizer, output, remote_code_from=base)
    what = f"LoRA merged into {base}" if kind == "adapter" else "full checkpoint"
    print(f"exported {checkpoint} ({what}) -> {output}")
    print(f"norm_stats keys: {', '.join(sorted(model.config.norm_stats))}"
          + (f"; this run decodes with unnorm_key={unnorm_key!r}" if unnorm_key else ""))
    return output


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    try:
        export(cli_args)
    except OpenVLAError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
