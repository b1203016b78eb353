"""How far 120 iterations (230 k env steps) of PPO, GRPO and REINFORCE moved the policy's weights from the pick prior:
per run, the LoRA update's Frobenius norm summed over the adapted LM linears (||B A|| * alpha / r, the change to the
base weight) and the towers' change ||W - W_prior|| (--train-vision at 1e-5). Reads the checkpoints only (CPU).

    python bench/results/learning_s30/weight_change.py   # -> bench/results/learning_s30/weight_change.json
"""
import json
import sys
import tarfile
import tempfile
from pathlib import Path

from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
import openvla_patch as ovp  # noqa: E402

RUNS = {  # label -> checkpoint directory (unpacked from the runs' tarballs under .learn/)
    "ppo_it120": ".learn/s26/m1/run/ppo/train__ppo_state__1__1795533596/checkpoints/iter_000120",
    "grpo_it120": ".learn/s30/grpo/grpo/train__grpo_grpo__1__1795573972/checkpoints/iter_000120",
    "reinforce_it120": ".learn/s30/reinforce/reinforce/train__reinforce_reinforce__1__1795575685/checkpoints/iter_000120",
}
PRIOR = ".learn/s25/prior_pick.tar.xz"  # the pick prior (learning_s25), unpacked below into a temporary directory


def lora_delta_norm(ckpt: Path) -> float:
    """sqrt(sum over adapted linears of ||scale * B @ A||_F^2)."""
    cfg = json.loads((ckpt / "adapter_config.json").read_text())
    scale = cfg["lora_alpha"] / cfg["r"]
    w = load_file(str(ckpt / "adapter_model.safetensors"))
    total = 0.0
    for name, a in w.items():
        if "lora_A" in name:
            b = w[name.replace("lora_A", "lora_B")]
            total += (scale * b.float() @ a.float()).pow(2).sum().item()
    return total ** 0.5


def tower_delta_norm(ckpt: Path, prior: dict) -> float:
    """||towers and projector - the prior's||_F over the tensors vision.safetensors holds."""
    v = load_file(str(ckpt / "vision.safetensors"))
    total, matched = 0.0, 0
    for name, t in v.items():
        name = ovp._to_checkpoint_key(name)  # timm's LayerScale `gamma` is the released format's `scale_factor`
        key = next((k for k in prior if k.endswith(name) or name.endswith(k)), None)
        if key is not None and prior[key].shape == t.shape:
            total += (t.float() - prior[key].float()).pow(2).sum().item()
            matched += 1
    if matched != len(v):
        sys.exit(f"{ckpt}: matched {matched} of {len(v)} tower tensors to the prior")
    return total ** 0.5


with tempfile.TemporaryDirectory() as tmp:
    with tarfile.open(PRIOR) as tar:
        tar.extractall(tmp, filter="data")
    prior = load_file(f"{tmp}/prior/model-00001-of-00001.safetensors")
out = {label: {"lora_delta_fro": lora_delta_norm(Path(p)), "tower_delta_fro": tower_delta_norm(Path(p), prior)}
       for label, p in RUNS.items()}
print(json.dumps(out, indent=1))
Path("bench/results/learning_s30/weight_change.json").write_text(json.dumps(out, indent=1) + "\n")
