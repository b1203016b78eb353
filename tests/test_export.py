"""export_openvla.py: an RL adapter merged into a released-format checkpoint that loads strictly and acts
exactly like the adapter run; full checkpoints re-written; errors users can cause end in one line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from export_openvla import Args, export
from openvla_patch import BUILTIN_NORM_KEY, LoraSettings, OpenVLAError, load_vla, save_adapter

REPO = Path(__file__).resolve().parents[1]
INSTRUCTIONS = ["put the green cube on the towel", "put the red block on the plate", "lift it", "push cup"]


@pytest.fixture(scope="module")
def rl_checkpoint(tiny_dir, tmp_path_factory) -> Path:
    """What ppo_openvla.py's save_checkpoint writes, with a LoRA that changes the model (B starts at 0).
    Seeded as a whole (LoRA's A is drawn at attach time), so the test does not depend on the tests before it."""
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model, _ = load_vla(str(tiny_dir), dtype=torch.float32, lora=LoraSettings(rank=4), with_value_head=True)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
    path = tmp_path_factory.mktemp("run") / "checkpoints" / "iter_000002"
    path.mkdir(parents=True)
    save_adapter(model, path, base_path=str(tiny_dir))
    info = {"vla_path": str(tiny_dir), "unnorm_key": BUILTIN_NORM_KEY, "iteration": 2, "global_step": 16,
            "world_size": 1, "args": {"load_in_4bit": False}}
    (path / "openvla_rl.json").write_text(json.dumps(info))
    return path


def _inputs(processor):
    images = torch.randint(0, 256, (len(INSTRUCTIONS), 224, 224, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    return processor(images, INSTRUCTIONS)


def test_export_acts_like_the_adapter_run(tiny_dir, rl_checkpoint, tmp_path):
    out = export(Args(checkpoint=str(rl_checkpoint.parent.parent), output_dir=str(tmp_path / "export")))
    assert (out / "preprocessor_config.json").exists() and not list(out.glob("adapter_*"))
    assert BUILTIN_NORM_KEY in json.loads((out / "config.json").read_text())["norm_stats"]
    exported, processor = load_vla(str(out), dtype=torch.float32)  # strict: every tensor named as released
    adapter_run, _ = load_vla(str(tiny_dir), dtype=torch.float32, adapter_path=rl_checkpoint,
                              trainable_adapter=False)
    base, _ = load_vla(str(tiny_dir), dtype=torch.float32)
    inputs = _inputs(processor)
    # The export stores the merged weights in bf16 as released, so the exported model equals the adapter run up to
    # that rounding. Compare on the same tokens (teacher-forced), not by greedy decoding: the tiny random model's action
    # distribution is nearly uniform (log-probs ~ -5.5), so its top logits often lie within that rounding of each
    # other and a greedy token can flip (it did in CI) for reasons that have nothing to do with the export.
    tokens = adapter_run.eval().generate_actions(*inputs, greedy=True).tokens  # (B, 7)
    ours, theirs, before = (m.eval().evaluate_actions(*inputs, tokens) for m in (exported, adapter_run, base))
    assert (ours.logprobs - theirs.logprobs).abs().max() < 0.01  # only the bf16 rounding of the merged weights (~2e-4)
    assert (ours.entropy - theirs.entropy).abs().max() < 0.01
    assert (before.logprobs - theirs.logprobs).abs().max() > 0.1  # the merged LoRA changed the model (by ~0.4)


def test_full_checkpoint_is_rewritten_unchanged(tiny_dir, tmp_path):
    out = export(Args(checkpoint=str(tiny_dir), output_dir=str(tmp_path / "export")))
    exported, processor = load_vla(str(out), dtype=torch.float32)
    base, _ = load_vla(str(tiny_dir), dtype=torch.float32)
    for (name, a), b in zip(exported.state_dict().items(), base.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert json.loads((out / "config.json").read_text())["norm_stats"] == base.config.norm_stats


def test_refusals_name_the_fix(tiny_dir, rl_checkpoint, tmp_path):
    quantised = tmp_path / "base-4bit"
    quantised.mkdir()
    config = json.loads((tiny_dir / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (quantised / "config.json").write_text(json.dumps(config))
    with pytest.raises(OpenVLAError, match="pass --vla-path the bf16 checkpoint"):
        export(Args(checkpoint=str(rl_checkpoint), output_dir=str(tmp_path / "a"), vla_path=str(quantised)))
    (tmp_path / "taken").mkdir()
    with pytest.raises(OpenVLAError, match="exists; pick another directory or pass --overwrite"):
        export(Args(checkpoint=str(rl_checkpoint), output_dir=str(tmp_path / "taken")))
    with pytest.raises(OpenVLAError, match="only replaces a checkpoint"):
        export(Args(checkpoint=str(rl_checkpoint), output_dir=str(tmp_path / "taken"), overwrite=True))
    with pytest.raises(OpenVLAError, match="--vla-path is for RL checkpoints"):
        export(Args(checkpoint=str(tiny_dir), output_dir=str(tmp_path / "b"), vla_path=str(tiny_dir)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base-4bit", "taken"]  # nothing half-written


def test_cli_error_is_one_line_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "export_openvla.py", "--checkpoint", str(tmp_path / "nope"),
                           "--output-dir", str(tmp_path / "out")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: --checkpoint {tmp_path / 'nope'} does not exist"]
