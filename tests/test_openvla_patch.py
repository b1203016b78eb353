"""openvla_patch.py: checkpoint format, the blog's three fixes, value head, 4-bit + LoRA, bad input."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from scipy.stats import chisquare
from vla_inputs import INSTRUCTIONS, random_images

from openvla_patch import (
    ACTION_PREFIX_TOKEN_ID,
    ADAPTER_VISION_FILE,
    BUILTIN_NORM_KEY,
    LoraSettings,
    OpenVLAError,
    action_stats,
    actions_to_tokens,
    load_vla,
    make_vision_trainable,
    save_adapter,
    tokens_to_actions,
)


def _inputs(processor, instructions, images):
    return processor(images, instructions)


# --- checkpoint format -------------------------------------------------------------------------------


def test_tiny_checkpoint_has_released_layout(tiny_dir):
    files = sorted(p.name for p in tiny_dir.iterdir())
    assert "config.json" in files and "model.safetensors.index.json" in files and "tokenizer.json" in files
    assert [f for f in files if f.endswith(".safetensors")] == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["timm_model_ids"] == ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"]
    assert config["text_config"]["vocab_size"] == 32064 and config["pad_to_multiple_of"] == 64
    assert {"bridge_orig", BUILTIN_NORM_KEY} <= set(config["norm_stats"])
    keys = set(json.loads((tiny_dir / "model.safetensors.index.json").read_text())["weight_map"])
    assert "vision_backbone.featurizer.blocks.0.ls1.scale_factor" in keys
    assert not any(k.endswith(".gamma") for k in keys)
    assert any(k.startswith("vision_backbone.fused_featurizer.attn_pool.") for k in keys)
    assert {"projector.fc1.weight", "projector.fc3.bias", "language_model.lm_head.weight",
            "language_model.model.embed_tokens.weight"} <= keys
    with safe_open(str(tiny_dir / "model-00001-of-00003.safetensors"), "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.bfloat16


def test_tokenizer_layout(tiny_fp32):
    _, processor = tiny_fp32
    tok = processor.tokenizer
    assert tok.bos_token_id == 1 and tok.pad_token_id == 32000
    assert tok.convert_ids_to_tokens(ACTION_PREFIX_TOKEN_ID) == "▁"
    ids, mask = processor.tokenize(INSTRUCTIONS)
    assert (ids[:, 0] == 1).all() and (ids[:, -1] == ACTION_PREFIX_TOKEN_ID).all()
    lengths = mask.sum(1)
    assert lengths[0] < lengths[2]
    # padding sits right after BOS: a row is BOS, pads, then its real tokens up to the last column
    short = mask[1]
    n_pad = int((short == 0).sum())
    assert short[0] == 1 and (short[1 : 1 + n_pad] == 0).all() and (short[1 + n_pad :] == 1).all()
    assert (ids[1, 1 : 1 + n_pad] == 32000).all()


def _rewritten_checkpoint(src, dst, transform):
    """Copy checkpoint `src` to `dst` as a single model.safetensors whose tensors are `transform(tensors)`."""
    from safetensors.torch import save_file

    shutil.copytree(src, dst)
    tensors = {}
    for shard in sorted(dst.glob("model-*.safetensors")):
        with safe_open(str(shard), "pt") as f:
            tensors.update({k: f.get_tensor(k) for k in f.keys()})
        shard.unlink()
    (dst / "model.safetensors.index.json").unlink()
    save_file(transform(tensors), str(dst / "model.safetensors"))
    return dst


def test_strict_loading_names_renamed_and_missing_tensors(tiny_dir, tmp_path):
    victim = "vision_backbone.featurizer.blocks.0.ls1.scale_factor"
    untouched = _rewritten_checkpoint(tiny_dir, tmp_path / "single-file", lambda t: t)
    assert load_vla(str(untouched))[0] is not None  # the single-file layout loads too

    renamed = _rewritten_checkpoint(
        tiny_dir, tmp_path / "renamed",
        lambda t: {("vision_backbone.featurizer.blocks.0.ls1.gamma" if k == victim else k): v for k, v in t.items()})
    with pytest.raises(OpenVLAError, match=r"missing tensors: vision_backbone\.featurizer\.blocks\.0\.ls1\.scale_factor"):
        load_vla(str(renamed))

    missing = _rewritten_checkpoint(tiny_dir, tmp_path / "missing", lambda t: {k: v for k, v in t.items() if k != victim})
    with pytest.raises(OpenVLAError, match="missing tensors: .*ls1.scale_factor"):
        load_vla(str(missing))

    extra = _rewritten_checkpoint(tiny_dir, tmp_path / "extra", lambda t: {**t, "projector.fc4.weight": torch.zeros(2, 2)})
    with pytest.raises(OpenVLAError, match=r"unexpected tensors: projector\.fc4\.weight"):
        load_vla(str(extra))

    wrong_shape = _rewritten_checkpoint(tiny_dir, tmp_path / "shape", lambda t: {**t, "projector.fc3.bias": torch.zeros(3)})
    with pytest.raises(OpenVLAError, match=r"projector\.fc3\.bias has shape"):
        load_vla(str(wrong_shape))


def test_loaded_weights_equal_file_weights(tiny_dir, tiny_fp32):
    model, _ = tiny_fp32
    key = "vision_backbone.featurizer.blocks.0.ls1.scale_factor"
    shard = json.loads((tiny_dir / "model.safetensors.index.json").read_text())["weight_map"][key]
    with safe_open(str(tiny_dir / shard), "pt") as f:
        stored = f.get_tensor(key).float()
    assert torch.equal(model.vision_backbone.featurizer.blocks[0].ls1.gamma.detach(), stored)
    assert model.config.base_vocab_size == 32000 and model.config.action_token_ids.start == 31744


# --- processor -----------------------------------------------------------------------------------------


def test_processor_normalisation_and_resize(tiny_fp32):
    _, processor = tiny_fp32
    const = torch.full((1, 224, 224, 3), 128, dtype=torch.uint8)
    px = processor.process_images(const)
    assert px.shape == (1, 6, 224, 224)
    v = 128 / 255
    assert torch.allclose(px[0, 0], torch.tensor((v - 0.484375) / 0.228515625), atol=1e-6)
    assert torch.allclose(px[0, 5], torch.tensor((v - 0.5) / 0.5), atol=1e-6)
    # any input size is resized to exactly 224x224, bicubic + antialias like PIL's resize
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(small).resize((320, 240), Image.BILINEAR))
    ours = processor.process_images(torch.from_numpy(smooth.copy())[None])[0, 3:] * 0.5 + 0.5  # SigLIP channels
    pil = np.asarray(Image.fromarray(smooth).resize((224, 224), Image.BICUBIC)).astype(np.float32) / 255
    assert np.abs(ours.permute(1, 2, 0).numpy() - pil).mean() < 2 / 255


# --- fix 1: batched generation with padding ------------------------------------------------------------


def test_batched_greedy_equals_single(tiny_fp32):
    model, processor = tiny_fp32
    images = random_images(3)
    batch = model.generate_actions(*_inputs(processor, INSTRUCTIONS, images), greedy=True)
    for i, instruction in enumerate(INSTRUCTIONS):
        alone = model.generate_actions(*_inputs(processor, [instruction], images[i : i + 1]), greedy=True)
        assert torch.equal(batch.tokens[i], alone.tokens[0])
        assert torch.allclose(batch.logprobs[i], alone.logprobs[0], atol=1e-5)
    # neighbours on the other side: reversed order gives the same per-sample result
    rev = model.generate_actions(*_inputs(processor, INSTRUCTIONS[::-1], images.flip(0)), greedy=True)
    assert torch.equal(rev.tokens.flip(0), batch.tokens)
    assert torch.allclose(rev.logprobs.flip(0), batch.logprobs, atol=1e-5)


def test_kv_cache_logits_equal_teacher_forced(tiny_fp32):
    model, processor = tiny_fp32
    ids, mask, px = _inputs(processor, INSTRUCTIONS, random_images(3, seed=1))
    sample = model.generate_actions(ids, mask, px, temperature=1.0)
    logits, _ = model.forward(ids, mask, px, sample.tokens)  # (B, 7, V)
    teacher = logits[..., model.config.action_token_ids.start : model.config.base_vocab_size]
    assert torch.allclose(sample.logits, teacher.float(), atol=1e-5)


# --- fix 2: sampling only action tokens, all 256 bins -----------------------------------------------------


class _PushMassOffActions(torch.nn.Module):
    """Wraps lm_head so that non-action tokens carry almost all probability mass."""

    def __init__(self, head, first, last):
        super().__init__()
        self.head, self.first, self.last = head, first, last

    def forward(self, h):
        logits = self.head(h)
        bonus = torch.full_like(logits, 100.0)
        bonus[..., self.first : self.last] = 0
        return logits + bonus


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sampling_only_action_tokens_matches_masked_softmax(tiny_dir, temperature):
    model, processor = load_vla(str(tiny_dir), dtype=torch.float32)
    lm = model.causal_lm
    first, last = model.config.action_token_ids.start, model.config.base_vocab_size
    lm.lm_head.weight.data[first:last] *= 12  # a peaked distribution over the action tokens
    lm.lm_head = _PushMassOffActions(lm.lm_head, first, last)
    n = 400
    ids, mask, px = _inputs(processor, ["put the green cube on the towel"] * n, random_images(1).expand(n, -1, -1, -1))
    with torch.no_grad():
        full_logits, _ = model.forward(ids[:1], mask[:1], px[:1], torch.full((1, 7), first))
    full_probs = torch.softmax(full_logits[0, 0].double() / temperature, -1)
    assert full_probs[first:last].sum() < 1e-6  # the model's mass really is elsewhere
    sample = model.generate_actions(ids, mask, px, temperature=temperature,
                                    generator=torch.Generator().manual_seed(0))
    assert ((sample.tokens >= first) & (sample.tokens < last)).all()
    expected = torch.softmax(full_logits[0, 0, first:last].double() / temperature, -1).numpy()
    counts = np.bincount((sample.tokens[:, 0] - first).numpy(), minlength=256)
    assert expected.max() > 0.05  # non-trivial distribution
    # chi-square on groups of columns with an expected count of at least 20 each
    order = np.argsort(-expected)
    groups, cur_e, cur_c = [], 0.0, 0
    for j in order:
        cur_e += expected[j] * n
        cur_c += counts[j]
        if cur_e >= 20:
            groups.append((cur_c, cur_e))
            cur_e, cur_c = 0.0, 0
    if cur_e > 0:
        groups[-1] = (groups[-1][0] + cur_c, groups[-1][1] + cur_e)
    obs, exp = np.array(groups, dtype=float).T
    assert len(obs) >= 4
    assert chisquare(obs, exp).pvalue > 1e-3
    # the reported log-probs are those of the tempered, masked distribution
    np.testing.assert_allclose(sample.logprobs[:, 0].exp().numpy(), expected[(sample.tokens[:, 0] - first).numpy()],
                               rtol=1e-4)


def test_all_256_bins_round_trip(tiny_fp32):
    model, _ = tiny_fp32
    cfg = model.config
    tokens = torch.arange(cfg.action_token_ids.start, cfg.base_vocab_size)[:, None].expand(-1, 7)
    for key in ("bridge_orig", BUILTIN_NORM_KEY):
        stats = action_stats(cfg, key)
        actions = tokens_to_actions(tokens, cfg, stats)
        assert torch.equal(actions_to_tokens(actions, cfg, stats), tokens)
        # the top bin (token 31744, d = 256) decodes to the top of the range, not a clipped 255th centre
        top = actions[0]
        assert torch.allclose(top[:6], stats["q99"][:6]) and top[6] == 1.0
        assert len(torch.unique(actions[:, 0])) == 256


def test_tokens_to_actions_reads_the_vocabulary_without_building_a_llama_config(tiny_fp32, monkeypatch):
    """The rollout maps tokens every step: building a LlamaConfig per call cost ~2 ms x 4 (session 24)."""
    model, _ = tiny_fp32
    cfg = model.config
    stats = action_stats(cfg, BUILTIN_NORM_KEY)
    tokens = torch.full((2, 7), cfg.action_token_ids.start)
    expected = tokens_to_actions(tokens, cfg, stats)
    monkeypatch.setattr(type(cfg), "llama_config", lambda self: pytest.fail("built a LlamaConfig"))
    assert torch.equal(tokens_to_actions(tokens, cfg, stats), expected)


def test_unknown_unnorm_key_lists_available(tiny_fp32):
    model, _ = tiny_fp32
    with pytest.raises(OpenVLAError, match="bridge_orig, panda_tabletop"):
        action_stats(model.config, "fractal")


# --- fix 3: rollout log-probs == learning log-probs ----------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 1.7])
def test_rollout_logprobs_equal_evaluate_actions(tiny_fp32, temperature):
    model, processor = tiny_fp32
    ids, mask, px = _inputs(processor, INSTRUCTIONS, random_images(3, seed=2))
    sample = model.generate_actions(ids, mask, px, temperature=temperature)
    ev = model.evaluate_actions(ids, mask, px, sample.tokens, temperature=temperature)
    assert torch.allclose(ev.logprobs, sample.logprobs, atol=1e-5)
    assert (ev.entropy > 0).all() and (ev.entropy <= np.log(256) + 1e-4).all()


# --- value head ------------------------------------------------------------------------------------------


def test_value_head_stop_grad(tiny_dir):
    model, processor = load_vla(str(tiny_dir), dtype=torch.float32, with_value_head=True)
    ids, mask, px = _inputs(processor, INSTRUCTIONS, random_images(3))
    sample = model.generate_actions(ids, mask, px)
    ev = model.evaluate_actions(ids, mask, px, sample.tokens)
    assert torch.allclose(ev.values, sample.values, atol=1e-5)
    ev.values.pow(2).mean().backward()
    for name, p in model.named_parameters():
        if name.startswith("value_head."):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None or not p.grad.any(), name
    model.zero_grad(set_to_none=True)
    ev = model.evaluate_actions(ids, mask, px, sample.tokens, detach_value_input=False)
    ev.values.pow(2).mean().backward()
    assert model.causal_lm.model.layers[-1].mlp.down_proj.weight.grad.abs().sum() > 0


# --- 4-bit + LoRA, adapters -----------------------------------------------------------------------------------


def test_4bit_lora_trains_only_lora(tiny_dir):
    bnb = pytest.importorskip("bitsandbytes")
    model, processor = load_vla(str(tiny_dir), dtype=torch.float32, load_in_4bit=True,
                                lora=LoraSettings(rank=4, alpha=8), with_value_head=True)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.causal_lm.modules())
    ids, mask, px = _inputs(processor, INSTRUCTIONS[:2], random_images(2))
    sample = model.generate_actions(ids, mask, px)
    ev = model.evaluate_actions(ids, mask, px, sample.tokens)
    (-(ev.logprobs.sum()) + ev.values.pow(2).sum()).backward()
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert lora and all(p.dtype == torch.float32 for p in lora.values())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in lora.items() if "lora_B" in n or "lora_A" in n)
    for name, p in model.named_parameters():
        if "lora_" not in name and not name.startswith("value_head."):
            assert not p.requires_grad and p.grad is None, name


@pytest.mark.parametrize("train_vision", [False, True])
def test_lora_adapter_round_trip(tiny_dir, tmp_path, train_vision):
    model, processor = load_vla(str(tiny_dir), dtype=torch.float32, lora=LoraSettings(rank=4), with_value_head=True)
    if train_vision:  # towers and projector trained too: they go beside the adapter and come back
        make_vision_trainable(model)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    ids, mask, px = _inputs(processor, INSTRUCTIONS, random_images(3))
    before = model.generate_actions(ids, mask, px, greedy=True)
    save_adapter(model, tmp_path, base_path=str(tiny_dir))
    written = {p.name for p in tmp_path.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "value_head.safetensors"} <= written
    assert (ADAPTER_VISION_FILE in written) == train_vision
    loaded, _ = load_vla(str(tiny_dir), dtype=torch.float32, adapter_path=tmp_path, with_value_head=True)
    after = loaded.generate_actions(ids, mask, px, greedy=True)
    assert torch.equal(before.tokens, after.tokens)
    assert torch.allclose(before.logprobs, after.logprobs, atol=1e-5)
    assert torch.allclose(before.values, after.values, atol=1e-5)
    if train_vision:
        assert all(p.requires_grad for p in loaded.projector.parameters())
        assert torch.equal(loaded.projector.fc1.weight, model.projector.fc1.weight)


# --- bad input ------------------------------------------------------------------------------------------------


def test_missing_path_is_named(tmp_path):
    with pytest.raises(OpenVLAError, match="does-not-exist.*does not exist"):
        load_vla(str(tmp_path / "does-not-exist"))


def test_hub_id_offline_says_how_to_pass_local_path(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(OpenVLAError, match="--vla-path ./openvla-7b"):
        load_vla("openvla/openvla-7b-not-cached")


def test_4bit_without_lora_is_refused(tiny_dir):
    with pytest.raises(OpenVLAError, match="needs LoRA"):
        load_vla(str(tiny_dir), load_in_4bit=True)
