"""Throughput of OpenVLA-7B shapes on one GPU, against the physical floor.

Random weights at the released 7B sizes (cost does not depend on weight values), built directly on the
GPU by `openvla_patch.random_openvla`. Sections (each optional, `--sections`):

* `ceilings`: the GPU's measured dense bf16 matmul rate (8192^3 GEMM) and memory bandwidth (a large
  device-to-device copy), the two ceilings of the floor computations below.
* `rollout`: one rollout step (image + prompt -> 7 action tokens) for B envs, (a) the released code's
  only option: batch-size-1 HF `generate` (7 new tokens, HF's default top-k 50 sampling) in a loop over
  the B envs, and (b) our batched `generate_actions`; bf16 and 4-bit NF4 (`--quant`).
* `update`: one PPO update sample (teacher-forced `evaluate_actions` + backward, LoRA r=32 + value
  head) with and without gradient checkpointing, growing the micro-batch until it no longer fits.
* `iteration`: writes a random 7B checkpoint, runs `ppo_openvla.py` for one iteration of the blog's size
  (24 envs x 80 steps, 20 minibatches, built-in task on CPU worker envs) and reads its rollout / env /
  update times back from tensorboard.

Floors: FLOPs and bytes are counted from the model's shapes (linear layers 2 FLOP per weight per token,
attention 4 T^2 d per layer, causal halved); a step's floor is max(FLOPs / matmul rate, bytes / bandwidth)
per phase. Rollout = prefill (vision + projector + LM over ~280 tokens per env) + 6 cached decode steps
(each reads the LM weights once). Update = vision forward + LM forward + LM input-gradient backward (the
frozen weights need no weight gradients; LoRA's are negligible), + one more LM forward with checkpointing.

    python bench/throughput.py --out bench/results/throughput.json          # all sections (~8 min, H100)
    python bench/throughput.py --sections rollout --batch-sizes 1 24 96
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import openvla_patch as ovp  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Args:
    sections: list[str] = field(default_factory=lambda: ["ceilings", "rollout", "update", "iteration"])
    """which measurements to run: ceilings rollout update iteration"""
    batch_sizes: list[int] = field(default_factory=lambda: [1, 24, 96])
    """rollout batch sizes (envs per step)"""
    quant: list[str] = field(default_factory=lambda: ["bf16", "4bit"])
    """weight formats for the rollout section"""
    hf_loop_max_batch: int = 24
    """largest B for the (slow) batch-size-1 HF generate loop"""
    micro_batches: list[int] = field(default_factory=lambda: [4, 8, 16, 32, 48, 64])
    """update micro-batch sizes to try, in order, until one does not fit"""
    repeats: int = 5
    """timed repetitions after warm-up (median reported)"""
    iteration_envs: int = 24
    """envs of the full-iteration section (the blog's 24)"""
    out: str = "bench/results/throughput.json"
    """where the JSON results go"""


def timed(fn, repeats: int) -> float:
    """Median seconds of `fn()` after one warm-up call, CUDA-synchronised."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# --------------------------------------------------------------------------------------------------
# Counting FLOPs and bytes from the shapes
# --------------------------------------------------------------------------------------------------


def linear_params(module: torch.nn.Module) -> int:
    return sum(m.in_features * m.out_features for m in module.modules() if isinstance(m, torch.nn.Linear))


def vision_flops(model: ovp.OpenVLAForActionPrediction) -> float:
    """FLOPs of one image through both towers (up to the second-to-last block) and the projector."""
    total = 0.0
    for tower in (model.vision_backbone.featurizer, model.vision_backbone.fused_featurizer):
        tokens = tower.patch_embed.num_patches + tower.num_prefix_tokens
        used = len(tower.blocks) - 1  # stop_early: the last block is skipped
        per_block = linear_params(tower.blocks[0])
        patch = tower.patch_embed.proj
        total += 2 * patch.weight.numel() * tower.patch_embed.num_patches
        total += used * (2 * per_block * tokens + 4 * tokens**2 * tower.embed_dim)
    return total + 2 * linear_params(model.projector) * 256


def lm_prefill_flops(model, tokens: int) -> float:
    cfg = model.causal_lm.config
    per_layer = linear_params(model.causal_lm.model.layers[0])
    return cfg.num_hidden_layers * (2 * per_layer * tokens + 2 * tokens**2 * cfg.hidden_size)  # causal: half of 4 T^2 d


def lm_weight_bytes(model, bits: int) -> float:
    layers = model.causal_lm.model.layers
    return len(layers) * linear_params(layers[0]) * bits / 8


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------


def measure_ceilings(repeats: int) -> dict:
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    t = timed(lambda: a @ b, repeats * 4)
    src = torch.empty(2 * 2**30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    tc = timed(lambda: dst.copy_(src), repeats * 4)
    return {"matmul_tflops": 2 * n**3 / t / 1e12, "bandwidth_tbs": 2 * src.numel() / tc / 1e12}


def inputs(processor, batch: int):
    images = torch.randint(0, 256, (batch, 224, 224, 3), dtype=torch.uint8, device="cuda")
    instructions = ["put the green cube on the towel", "put the red cube on the plate",
                    "place the green block onto the cloth"] * (batch // 3 + 1)
    return processor(images, instructions[:batch], dtype=torch.bfloat16)


def hf_loop(model, ids, mask, px):
    """The released code path: for each env alone, HF `generate` of 7 tokens over the multimodal prompt."""
    lm = model.causal_lm
    for i in range(ids.shape[0]):
        embeds, m, _ = model._prefill_inputs(ids[i : i + 1], mask[i : i + 1], px[i : i + 1])
        lm.generate(inputs_embeds=embeds, attention_mask=m, max_new_tokens=7, min_new_tokens=7, do_sample=True,
                    pad_token_id=32000)


def measure_rollout(args: Args, config, ceilings) -> list[dict]:
    rows = []
    for quant in args.quant:
        model = ovp.prepare_model(ovp.random_openvla(config, "cuda"), device="cuda", load_in_4bit=quant == "4bit",
                                  lora=ovp.LoraSettings() if quant == "4bit" else None, with_value_head=True)
        model.eval()
        processor = ovp.OpenVLAProcessor(ovp.llama_layout_tokenizer())
        bits = 16 if quant == "bf16" else 4
        for batch in args.batch_sizes:
            ids, mask, px = inputs(processor, batch)
            tokens = 1 + 256 + ids.shape[1]
            torch.cuda.reset_peak_memory_stats()
            ours = timed(partial(model.generate_actions, ids, mask, px), args.repeats)
            peak = torch.cuda.max_memory_allocated() / 2**30
            flops = batch * (vision_flops(model) + lm_prefill_flops(model, tokens))
            floor = flops / (ceilings["matmul_tflops"] * 1e12) + 6 * lm_weight_bytes(model, bits) / (
                ceilings["bandwidth_tbs"] * 1e12)
            with torch.no_grad():  # where the time goes: vision tower + projector, and the whole prefill
                vision = timed(partial(model.embed_images, px), args.repeats)
                prefill = timed(partial(model.forward, ids, mask, px, ids[:, -1:]), args.repeats)
            row = {"quant": quant, "batch": batch, "ours_s": ours, "floor_s": floor, "ours_over_floor": ours / floor,
                   "vision_s": vision, "prefill_s": prefill, "decode_6_steps_s": ours - prefill,
                   "prefill_floor_s": flops / (ceilings["matmul_tflops"] * 1e12), "peak_gib": peak,
                   "prompt_tokens": tokens}
            if batch <= args.hf_loop_max_batch:
                with torch.no_grad():
                    row["hf_loop_s"] = timed(partial(hf_loop, model, ids, mask, px), max(1, args.repeats // 2))
                row["speedup_vs_hf_loop"] = row["hf_loop_s"] / ours
            print(json.dumps(row), flush=True)
            rows.append(row)
        del model
        torch.cuda.empty_cache()
    return rows


def update_step(model, ids, mask, px, tokens) -> None:
    ev = model.evaluate_actions(ids, mask, px, tokens)
    (ev.logprobs.sum() + ev.values.sum()).backward()
    model.zero_grad(set_to_none=True)


def measure_update(args: Args, config, ceilings) -> list[dict]:
    rows = []
    model = ovp.prepare_model(ovp.random_openvla(config, "cuda"), device="cuda", lora=ovp.LoraSettings(rank=32, alpha=16),
                              with_value_head=True)
    processor = ovp.OpenVLAProcessor(ovp.llama_layout_tokenizer())
    model.train()
    for checkpointing in (False, True):
        if checkpointing:
            model.causal_lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        best = None
        for micro in args.micro_batches:
            ids, mask, px = inputs(processor, micro)
            tokens = torch.randint(31744, 32000, (micro, 7), device="cuda")

            try:
                torch.cuda.reset_peak_memory_stats()
                t = timed(partial(update_step, model, ids, mask, px, tokens), args.repeats)
            except torch.OutOfMemoryError:
                model.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                break
            n_tok = 1 + 256 + ids.shape[1] + 6
            lm = lm_prefill_flops(model, n_tok)
            flops = micro * (vision_flops(model) + (3 if checkpointing else 2) * lm)
            floor = flops / (ceilings["matmul_tflops"] * 1e12)
            row = {"gradient_checkpointing": checkpointing, "micro_batch": micro, "ms_per_sample": 1000 * t / micro,
                   "floor_ms_per_sample": 1000 * floor / micro, "ours_over_floor": t / floor,
                   "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
            print(json.dumps(row), flush=True)
            rows.append(row)
            best = row
        if best is None:
            rows.append({"gradient_checkpointing": checkpointing, "error": "micro-batch 4 does not fit"})
    return rows


def measure_iteration(args: Args, config) -> dict:
    """One PPO iteration at the blog's size, through the real script, on a random 7B checkpoint."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    work = Path(tempfile.mkdtemp(prefix="openvla7b-"))
    model = ovp.random_openvla(config, "cuda", torch.bfloat16)
    model.config.norm_stats = {ovp.BUILTIN_NORM_KEY: ovp.BUILTIN_NORM_STATS}
    t = time.perf_counter()
    ovp.save_pretrained(model, ovp.llama_layout_tokenizer(), work / "openvla-7b-random")
    write_s = time.perf_counter() - t
    del model
    torch.cuda.empty_cache()
    cmd = [sys.executable, str(ROOT / "ppo_openvla.py"), "--vla-path", str(work / "openvla-7b-random"),
           "--num-envs", str(args.iteration_envs), "--num-steps", "80", "--num-minibatches", "20",
           "--num-iterations", "1", "--eval-every", "0", "--gradient-checkpointing", "--env-backend", "cpu",
           "--output-dir", str(work / "runs")]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    total = time.perf_counter() - t
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    (run_dir,) = (work / "runs").iterdir()
    acc = EventAccumulator(str(run_dir)).Reload()
    scalars = {k: acc.Scalars(k)[-1].value for k in acc.Tags()["scalars"]}
    return {"command": " ".join(cmd[1:]), "write_checkpoint_s": write_s, "script_wall_s": total,
            **{k: scalars[k] for k in ("time/rollout_s", "time/env_s", "time/update_s", "charts/SPS",
                                        "losses/first_ratio")}}


def main(args: Args) -> None:
    if not torch.cuda.is_available():
        sys.exit("error: bench/throughput.py needs a CUDA GPU")
    config = ovp.OpenVLAConfig(norm_stats={ovp.BUILTIN_NORM_KEY: ovp.BUILTIN_NORM_STATS})  # the released 7B sizes
    result = {"device": torch.cuda.get_device_name(0), "date": time.strftime("%Y-%m-%d"),
              "command": "python bench/throughput.py " + " ".join(sys.argv[1:]),
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "transformers": __import__("transformers").__version__, "peft": __import__("peft").__version__,
                           "timm": __import__("timm").__version__}}
    result["ceilings"] = measure_ceilings(args.repeats)
    print(json.dumps(result["ceilings"]), flush=True)
    if "rollout" in args.sections:
        result["rollout"] = measure_rollout(args, config, result["ceilings"])
    if "update" in args.sections:
        result["update"] = measure_update(args, config, result["ceilings"])
    if "iteration" in args.sections:
        result["iteration"] = measure_iteration(args, config)
        print(json.dumps(result["iteration"]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(tyro.cli(Args))
