"""OpenVLA-7B written natively for current transformers, and made ready for online RL.

This module owns the model side of openvla-rl; the algorithm scripts import it and hold every line
that changes the gradient. It provides:

* `OpenVLAConfig` / `OpenVLAForActionPrediction`: the released `openvla/openvla-7b` architecture
  (timm DINOv2-L/14-reg4 + SigLIP-so400m/14 fused vision backbone, features from the second-to-last
  block of each; a GELU MLP projector; a transformers `LlamaForCausalLM`), loading the released
  checkpoint format strictly and without `trust_remote_code`. Sizes come from `config.json`, so the same
  code loads the 7B checkpoint and the tiny ones written by `make_tiny_openvla`.
* `OpenVLAProcessor`: batched uint8 RGB images -> `pixel_values` (B, 6, 224, 224); instructions ->
  prompt token ids + attention mask.
* The three fixes of the blog post "OpenVLA finetuning with online RL" (shared/seeds/000):
  1. Batched generation. The released code asserts batch size 1; naively removing the assert gives
     padding-dependent actions because position ids and the cached-step attention mask ignore padding.
     Here every sequence is laid out as ``[BOS][256 patches][pads][prompt][29871]`` (padding sits
     between BOS and the prompt, so every row ends in the same column), the attention mask covers
     pads in the prefill AND in every cached decode step, and position ids are the running count of
     real tokens. A padded sample therefore computes exactly what it computes alone.
  2. Sampling only the 256 action tokens (all others get probability 0, as if their logits were -inf),
     with plain temperature sampling or greedy decoding (no top-k, top-p or beams), and decoding with
     all 256 bin centres: the top bin decodes to +1 instead of being clipped away.
  3. No off-policyness: `generate_actions` returns the log-probs of the sampled tokens under exactly
     the distribution it sampled from, and `evaluate_actions` recomputes them teacher-forced with the
     same mask and temperature, so the PPO ratio starts at 1.
* `ValueHead`: the blog's MLP on the hidden state of the last prompt token (stop-grad by default).
* Speed (issue 13): the 6 decode steps replayed as a CUDA graph over a static KV cache on GPUs (the eager
  path kept as the reference); LoRA computing in the base dtype over fp32 master weights (`lm_autocast`);
  the rollout's patch embeddings reusable by the update, which then skips the frozen vision towers; the
  decoder layers compiled for the update's teacher-forced passes and the rollout's prefill and decode steps
  (`compile_decoder_layers`, opt-in).
* `load_vla`: bf16/fp32, 4-bit NF4 language model (bitsandbytes), LoRA (peft), gradient checkpointing,
  SDPA or flash-attention; `save_adapter` / `save_pretrained` write what `load_vla` reads back, and
  `save_pretrained` also what the released stack reads (preprocessor config, the base's remote code, a
  tokenizer.json for tokenizers 0.19).
* `make_tiny_openvla`: small random checkpoints in exactly the released file layout, for tests and
  offline experiments (`--vla-path tiny` in every script).

Shapes in comments: B batch, L prompt length (padded), P = 256 patches, H LM hidden size, A = 7 action
dimensions, V vocabulary rows.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, LlamaTokenizer, PreTrainedTokenizerBase
from transformers.masking_utils import create_causal_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, eager_attention_forward

# ---------------------------------------------------------------------------------------------------
# Format facts of the released checkpoint (shared/DESIGN.md, "OpenVLA facts the code must honour")
# ---------------------------------------------------------------------------------------------------

ACTION_DIM = 7
"""OpenVLA predicts one token per action dimension: dx, dy, dz, droll, dpitch, dyaw, gripper."""
PROMPT_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"
ACTION_PREFIX_TOKEN_ID = 29871
"""Llama-2's "▁": in training it preceded the action tokens, so every prompt ends with it."""
DINOV2_MEAN = (0.484375, 0.455078125, 0.40625)  # ImageNet stats rounded to bf16, as released
DINOV2_STD = (0.228515625, 0.2236328125, 0.224609375)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
UNUSED_CHECKPOINT_PREFIXES = ("vision_backbone.fused_featurizer.attn_pool.",)
"""SigLIP's attention-pooling head is saved in the checkpoint but OpenVLA never uses it."""
BUILTIN_NORM_KEY = "panda_tabletop"
"""norm_stats key of our built-in ManiSkill tasks: the 7-D action is the Panda `pd_ee_delta_pose`
controller's normalised action (already in [-1, 1]) plus the gripper (+1 open, -1 closed)."""
BUILTIN_NORM_STATS: dict[str, Any] = {
    "action": {"q01": [-1.0] * 7, "q99": [1.0] * 7, "mask": [True] * 6 + [False]},
}
BRIDGE_NORM_STATS: dict[str, Any] = {
    # `bridge_orig` action statistics of the released openvla-7b config.json (q01/q99 and mask are
    # what decoding uses): deltas in metres / radians, gripper 1 = open.
    "action": {
        "q01": [-0.02872725307941437, -0.04170349963009357, -0.026093858778476715,
                -0.08092105075716972, -0.09288699507713317, -0.20718276381492615, 0.0],
        "q99": [0.028309678435325586, 0.040855254605412394, 0.040161586627364146,
                0.08192047759890528, 0.07792850524187081, 0.20382574498653397, 1.0],
        "mask": [True] * 6 + [False],
    },
}
TINY_CACHE_DIR = Path(os.environ.get("OPENVLA_RL_CACHE", Path.home() / ".cache" / "openvla-rl"))
"""Where `--vla-path tiny` writes its checkpoint (override with $OPENVLA_RL_CACHE; safe to delete)."""
ADAPTER_VALUE_HEAD_FILE = "value_head.safetensors"
ADAPTER_VISION_FILE = "vision.safetensors"  # towers + projector, when RL trained them (`make_vision_trainable`)


class OpenVLAError(ValueError):
    """A problem the user can fix (bad path, unknown key, missing package); the message says how."""


# ---------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------


@dataclass
class OpenVLAConfig:
    """The fields of the released `config.json` that define the model.

    `timm_model_kwargs` is ours (absent from the released file): per-tower overrides of the timm
    architecture, used by tiny checkpoints. Unknown keys are kept in `extra` and written back unchanged.
    """

    timm_model_ids: list[str] = field(
        default_factory=lambda: ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"]
    )
    timm_model_kwargs: list[dict[str, Any]] = field(default_factory=lambda: [{}, {}])
    image_sizes: list[int] = field(default_factory=lambda: [224, 224])
    text_config: dict[str, Any] = field(
        default_factory=lambda: {"model_type": "llama", "pad_token_id": 32000, "vocab_size": 32064}
    )
    norm_stats: dict[str, Any] = field(default_factory=dict)
    n_action_bins: int = 256
    pad_to_multiple_of: int = 64
    use_fused_vision_backbone: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> OpenVLAConfig:
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        cfg = cls(**{k: v for k, v in raw.items() if k in known})
        cfg.extra = {k: v for k, v in raw.items() if k not in known}
        if not cfg.use_fused_vision_backbone or len(cfg.timm_model_ids) != 2:
            raise OpenVLAError("only the fused DINOv2 + SigLIP backbone of OpenVLA is supported")
        if len(cfg.timm_model_kwargs) != len(cfg.timm_model_ids):
            cfg.timm_model_kwargs = [{} for _ in cfg.timm_model_ids]
        return cfg

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.extra)
        for name in self.__dataclass_fields__:
            if name != "extra":
                out[name] = getattr(self, name)
        if not any(self.timm_model_kwargs):
            out.pop("timm_model_kwargs")  # the released file has no such key
        return out

    def llama_config(self) -> LlamaConfig:
        # The released text_config stores only differences from LlamaConfig() defaults (Llama-2-7B
        # sizes, rms_norm_eps 1e-6), exactly what LlamaConfig(**text_config) reproduces.
        kwargs = {k: v for k, v in self.text_config.items() if k not in ("model_type", "torch_dtype", "dtype")}
        return LlamaConfig(**kwargs)

    @property
    def base_vocab_size(self) -> int:
        """Vocabulary without padding rows (32000 for Llama-2): action tokens are its top 256 ids."""
        # text_config's own entry when it has one (the released file does): building a LlamaConfig to read it
        # costs ~2 ms, and the rollout maps tokens to actions every step (BENCHMARKS.md section 1, session 24)
        vocab_size = self.text_config.get("vocab_size") or self.llama_config().vocab_size
        return vocab_size - self.pad_to_multiple_of

    @property
    def action_token_ids(self) -> range:
        return range(self.base_vocab_size - self.n_action_bins, self.base_vocab_size)


# ---------------------------------------------------------------------------------------------------
# Action tokens <-> continuous actions (fix 2: all 256 bin centres)
# ---------------------------------------------------------------------------------------------------
# Training discretised a normalised action x in [-1, 1] as d = digitize(x, linspace(-1, 1, 256)), with
# d in 1..256, and token id = base_vocab_size - d. The released decoder kept only the 255 midpoints and
# clipped d = 256 (x == +1, e.g. a fully open gripper) onto the 255th; we add the missing centre +1.
# Inside this module the 256 action tokens are indexed by "action column" c = token - first_action_id,
# the order of the logits we sample from, so d = n_bins - c.


def bin_centers(n_bins: int = 256, device: torch.device | str | None = None) -> torch.Tensor:
    """(n_bins,) decoded value of bin d = 1..n_bins: the 255 midpoints of the bins, then +1."""
    bins = torch.linspace(-1.0, 1.0, n_bins, dtype=torch.float64, device=device)
    return torch.cat([(bins[:-1] + bins[1:]) / 2, bins.new_ones(1)])


def action_stats(config: OpenVLAConfig, unnorm_key: str | None) -> dict[str, torch.Tensor]:
    """q01, q99 (float64) and mask (bool) of `norm_stats[unnorm_key]["action"]`, each of shape (7,)."""
    keys = sorted(config.norm_stats)
    if unnorm_key is None:
        if len(keys) != 1:
            raise OpenVLAError(f"this checkpoint has several norm_stats keys, pass --unnorm-key one of: {', '.join(keys)}")
        unnorm_key = keys[0]
    if unnorm_key not in config.norm_stats:
        raise OpenVLAError(f"unknown unnorm_key {unnorm_key!r}; this checkpoint has: {', '.join(keys) or 'none'}")
    stats = config.norm_stats[unnorm_key]["action"]
    q01 = torch.tensor(stats["q01"], dtype=torch.float64)
    q99 = torch.tensor(stats["q99"], dtype=torch.float64)
    mask = torch.tensor(stats.get("mask", [True] * len(stats["q01"])), dtype=torch.bool)
    return {"q01": q01, "q99": q99, "mask": mask}


def tokens_to_actions(tokens: torch.Tensor, config: OpenVLAConfig, stats: dict[str, torch.Tensor]) -> torch.Tensor:
    """Action token ids (..., 7) -> un-normalised actions (..., 7) float64:
    a = 0.5 (n + 1)(q99 - q01) + q01 where mask, else a = n (the gripper)."""
    first = config.action_token_ids.start
    if tokens.min() < first or tokens.max() >= config.base_vocab_size:
        raise ValueError("tokens_to_actions got ids outside the action-token range")
    d = config.base_vocab_size - tokens  # (..., 7) in 1..256
    normalized = bin_centers(config.n_action_bins, tokens.device)[d - 1]
    q01, q99, mask = (stats[k].to(tokens.device) for k in ("q01", "q99", "mask"))
    return torch.where(mask, 0.5 * (normalized + 1) * (q99 - q01) + q01, normalized)


def actions_to_tokens(actions: torch.Tensor, config: OpenVLAConfig, stats: dict[str, torch.Tensor]) -> torch.Tensor:
    """Inverse of `tokens_to_actions` (for SFT labels): un-normalised actions (..., 7) -> token ids."""
    actions = torch.as_tensor(actions, dtype=torch.float64)
    q01, q99, mask = (stats[k].to(actions.device) for k in ("q01", "q99", "mask"))
    scaled = 2 * (actions - q01) / (q99 - q01).clamp_min(1e-8) - 1
    normalized = torch.where(mask, scaled, actions).clamp(-1.0, 1.0)
    bins = torch.linspace(-1.0, 1.0, config.n_action_bins, dtype=torch.float64, device=actions.device)
    d = torch.bucketize(normalized, bins, right=True)  # == np.digitize(normalized, bins), in 1..256
    return config.base_vocab_size - d


# ---------------------------------------------------------------------------------------------------
# Processor
# ---------------------------------------------------------------------------------------------------


def resize_like_released(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 RGB (B, H, W, 3) -> (B, size, size, 3), each image resized exactly as the released processor
    resizes it: PIL's bicubic `Image.resize` (torchvision's `resize` of a PIL image, `interpolation=3`).

    PIL resamples in two passes and rounds to uint8 after each; which pass runs first depends on the
    sizes, and with bicubic's overshoot clipped in between that order alone moves pixels by up to 20/255
    (upscaling one side, shrinking the other). torchvision's uint8 resize and float `F.interpolate`
    passes each missed PIL by more than 1/255 on some sizes, so PIL itself it is (tests/test_fidelity.py).
    It costs ~5 ms per 640x480 image on one CPU core (torchvision's: ~0.7 ms); PIL releases the GIL while
    it resamples, so a thread pool spreads a batch over the cores.
    """
    def one(image: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC))

    with ThreadPoolExecutor(max_workers=min(len(images), os.cpu_count() or 1, 16)) as pool:
        return np.stack(list(pool.map(one, images)))


class OpenVLAProcessor:
    """Images and instructions -> model inputs, batched, on the images' device."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, image_size: int = 224):
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 32000

    def process_images(self, images: torch.Tensor | np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8 RGB (B, H, W, 3), any H and W, on any device -> pixel_values (B, 6, 224, 224) there.

        Resized to exactly 224x224 without keeping the aspect ratio by PIL itself, as the released
        processor does (`resize_like_released`); 224x224 inputs are used as they are. Channels 0-2
        DINOv2-normalised, 3-5 SigLIP-normalised.
        """
        images = torch.as_tensor(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
            raise ValueError(f"expected uint8 images of shape (B, H, W, 3), got {tuple(images.shape)} {images.dtype}")
        if images.shape[1:3] != (self.image_size, self.image_size):
            resized = resize_like_released(images.cpu().numpy(), self.image_size)
            images = torch.from_numpy(resized).to(images.device)
        x = images.permute(0, 3, 1, 2).float() / 255.0  # (B, 3, 224, 224) in [0, 1]
        dino = (x - x.new_tensor(DINOV2_MEAN)[:, None, None]) / x.new_tensor(DINOV2_STD)[:, None, None]
        siglip = (x - x.new_tensor(SIGLIP_MEAN)[:, None, None]) / x.new_tensor(SIGLIP_STD)[:, None, None]
        return torch.cat([dino, siglip], dim=1).to(dtype)  # (B, 6, 224, 224)

    def tokenize(self, instructions: Sequence[str], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Instructions -> input_ids, attention_mask, both (B, L).

        Each row is ``BOS, pads, prompt tokens, 29871``: padding goes right after BOS (which the model
        follows with the image patches), so all prompts end in the last column. That column predicts the
        first action token for every row, and generated tokens append on the right with no gaps.
        """
        rows = []
        for instruction in instructions:
            text = PROMPT_TEMPLATE.format(instruction=instruction.lower().rstrip("."))
            ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
            if ids[0] != self.tokenizer.bos_token_id:
                ids = [self.tokenizer.bos_token_id, *ids]
            if ids[-1] != ACTION_PREFIX_TOKEN_ID:
                ids.append(ACTION_PREFIX_TOKEN_ID)
            rows.append(ids)
        length = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, ids in enumerate(rows):
            pad = length - len(ids)
            input_ids[i, 0] = ids[0]
            input_ids[i, 1 + pad :] = torch.tensor(ids[1:])
            attention_mask[i, 0] = 1
            attention_mask[i, 1 + pad :] = 1
        return input_ids.to(device), attention_mask.to(device)

    def __call__(self, images: torch.Tensor, instructions: Sequence[str], dtype: torch.dtype = torch.float32):
        """-> input_ids (B, L), attention_mask (B, L), pixel_values (B, 6, 224, 224)."""
        input_ids, attention_mask = self.tokenize(instructions, device=torch.as_tensor(images).device)
        return input_ids, attention_mask, self.process_images(images, dtype)


# ---------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------


class FusedVisionBackbone(nn.Module):
    """DINOv2 (`featurizer`) + SigLIP (`fused_featurizer`) patch features, concatenated: (B, 256, D1 + D2)."""

    def __init__(self, config: OpenVLAConfig):
        super().__init__()
        towers = []
        for model_id, overrides in zip(config.timm_model_ids, config.timm_model_kwargs, strict=True):
            # global_pool="" builds no pooling head: OpenVLA reads patch tokens, so SigLIP's attn_pool
            # weights in the checkpoint are unused (UNUSED_CHECKPOINT_PREFIXES).
            towers.append(
                timm.create_model(model_id, pretrained=False, num_classes=0, global_pool="",
                                  img_size=config.image_sizes[0], **overrides)
            )
        self.featurizer, self.fused_featurizer = towers
        self.embed_dim = sum(t.embed_dim for t in towers)
        self.num_patches: int = self.featurizer.patch_embed.num_patches  # P = 256 at 224 px

    @staticmethod
    def _second_to_last_block(tower: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # == timm get_intermediate_layers(x, n={len(blocks) - 2}) of the released code: prefix tokens
        # (CLS, registers) dropped, no final norm; stop_early skips the unused last block.
        (features,) = tower.forward_intermediates(
            x, indices=[len(tower.blocks) - 2], norm=False, stop_early=True, output_fmt="NLC", intermediates_only=True
        )
        return features

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dino, siglip = torch.split(pixel_values, [3, 3], dim=1)  # (B, 3, 224, 224) each
        return torch.cat(
            [self._second_to_last_block(self.featurizer, dino), self._second_to_last_block(self.fused_featurizer, siglip)],
            dim=-1,
        )  # (B, 256, D1 + D2)


class FusedMLPProjector(nn.Module):
    """The released "fused-gelu-mlp" projector: D -> 4D -> H -> H with exact GELUs."""

    def __init__(self, vision_dim: int, llm_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
        self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
        self.fc3 = nn.Linear(llm_dim, llm_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.gelu(self.fc2(F.gelu(self.fc1(x)))))


class ValueHead(nn.Module):
    """The blog's critic: hidden -> hidden -> hidden/4 -> 1 with ReLUs, kept in fp32."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(hidden_size, hidden_size), nn.ReLU(),
            nn.Linear(hidden_size, hidden_size // 4), nn.ReLU(),
            nn.Linear(hidden_size // 4, 1),
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.net(hidden.float()).squeeze(-1)


@dataclass
class ActionSample:
    """What `generate_actions` returns for a batch of B prompts."""

    tokens: torch.Tensor  # (B, 7) action token ids
    logprobs: torch.Tensor  # (B, 7) log-prob of each token under the sampling distribution (fp32)
    values: torch.Tensor | None  # (B,) value-head output at the last prompt token, None without a head
    logits: torch.Tensor  # (B, 7, 256) tempered action logits each token was drawn from
    patch_embeddings: torch.Tensor | None = None  # (B, 256, H) with return_patch_embeddings, for evaluate_actions


@dataclass
class ActionEvaluation:
    """What `evaluate_actions` returns: teacher-forced, with gradients."""

    logprobs: torch.Tensor  # (B, 7)
    entropy: torch.Tensor  # (B, 7) entropy of the masked, tempered distribution at each position
    values: torch.Tensor | None  # (B,)


class OpenVLAForActionPrediction(nn.Module):
    """OpenVLA: fused vision backbone -> projector -> 256 patch embeddings inserted after BOS -> Llama-2.

    Parameter names are those of the released checkpoint, except timm's LayerScale `gamma` (stored as
    `scale_factor`, renamed on load and save) and `value_head.*` (ours, saved beside a LoRA adapter).
    Besides parameters it holds `decode_graphs` (see "Decoding the 7 action tokens" below).
    """

    def __init__(self, config: OpenVLAConfig, with_value_head: bool = False):
        super().__init__()
        self.config = config
        self.vision_backbone = FusedVisionBackbone(config)
        llama_config = config.llama_config()
        self.projector = FusedMLPProjector(self.vision_backbone.embed_dim, llama_config.hidden_size)
        self.language_model = LlamaForCausalLM(llama_config)
        self.value_head = ValueHead(llama_config.hidden_size) if with_value_head else None
        first = config.action_token_ids.start
        self.register_buffer("_action_ids", torch.arange(first, first + config.n_action_bins), persistent=False)
        self.decode_graphs: dict[tuple[int, int], StaticCacheDecoder] = {}
        """Captured decode steps by (batch, cache length), each with its KV cache; `.clear()` frees them."""
        self.cuda_graph_error: str | None = None
        """Why capturing a decode graph failed, if it did; automatic decoding is eager from then on."""
        self.full_graph_error: str | None = None
        """Why capturing a whole `generate_actions` call failed, if it did; "cuda_graph_all" runs as
        "cuda_graph_prefill" from then on (the other graphs stay)."""
        self.compiled_halves: tuple[Callable, Callable] | None = None
        """The compiled halves of a decoder layer around its KV cache, set by `compile_decoder_layers`: the rollout's
        prefill and decode steps run them (see there); None: transformers' layers, the reference."""

    # -- pieces --------------------------------------------------------------------------------------

    @property
    def causal_lm(self) -> LlamaForCausalLM:
        """The Llama model (inside the peft wrapper when LoRA is on)."""
        lm = self.language_model
        return lm.get_base_model() if hasattr(lm, "get_base_model") else lm

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 6, 224, 224) -> patch embeddings in the LM's input space (B, 256, H)."""
        vision_dtype = self.projector.fc1.weight.dtype
        return self.projector(self.vision_backbone(pixel_values.to(vision_dtype)))

    def image_patches(self, pixel_values: torch.Tensor | None, patch_embeddings: torch.Tensor | None) -> torch.Tensor:
        """The (B, P, H) patch embeddings: computed from `pixel_values`, or the ones a rollout returned.

        Reusing the rollout's `patch_embeddings` skips the vision towers and projector in the update; it
        is exact only while they are frozen (LoRA), so with full fine-tuning it is refused.
        """
        if (pixel_values is None) == (patch_embeddings is None):
            raise ValueError("pass exactly one of pixel_values and patch_embeddings")
        if patch_embeddings is None:
            return self.embed_images(pixel_values)
        vision = (*self.vision_backbone.parameters(), *self.projector.parameters())
        if torch.is_grad_enabled() and any(p.requires_grad for p in vision):
            raise OpenVLAError("patch_embeddings skip the vision backbone and projector, which are trained here "
                               "(full fine-tuning): pass pixel_values instead")
        return patch_embeddings

    def _prefill_inputs(self, input_ids, attention_mask, patches, extra_tokens=None):
        """Build ``[BOS][patches][pads][prompt][extra]`` embeddings, mask and position ids from the
        (B, P, H) image `patches`.

        Fix 1 (blog issue 1): position ids count real tokens only (pads get a dummy 1, never attended),
        so a padded row has the positions it would have alone.
        """
        if extra_tokens is not None:
            input_ids = torch.cat([input_ids, extra_tokens], dim=1)
            attention_mask = torch.cat([attention_mask, torch.ones_like(extra_tokens)], dim=1)
        text = self.causal_lm.get_input_embeddings()(input_ids)  # (B, L, H)
        patches = patches.to(text.dtype)  # (B, P, H)
        embeds = torch.cat([text[:, :1], patches, text[:, 1:]], dim=1)  # (B, 1 + P + L - 1, H)
        mask = torch.cat([attention_mask[:, :1], attention_mask.new_ones(patches.shape[:2]), attention_mask[:, 1:]], dim=1)
        position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
        return embeds, mask, position_ids

    def lm_autocast(self) -> contextlib.AbstractContextManager:
        """The context of every language-model call: LoRA computes in the base dtype (bf16).

        peft casts each LoRA layer's bf16 input up to the fp32 LoRA weights and adds an fp32 result back:
        ~20 bytes of extra memory traffic per activation and linear layer, plus fp32 matmuls, which was
        the +70 % prefill time of LoRA r32 at 7B (issue 13). `_attach_lora` turns that cast off; under
        autocast the fp32 master weights (what the optimizer steps) are cast to bf16 for the matmuls and
        everything else already runs in bf16. Rollout and update both run under it, so they compute the
        same function and the PPO ratio still starts at 1. A no-op without LoRA or in fp32. No cast cache:
        each LoRA weight is used once per pass anyway, and a cache must not outlive a CUDA graph capture.
        """
        weight = self.causal_lm.get_input_embeddings().weight
        if weight.dtype == torch.float32 or not hasattr(self.language_model, "peft_config"):
            return contextlib.nullcontext()
        return torch.autocast(weight.device.type, dtype=weight.dtype, cache_enabled=False)

    def _action_logits(self, hidden: torch.Tensor, temperature: float) -> torch.Tensor:
        """Hidden states (..., H) -> tempered fp32 logits over the 256 action tokens (..., 256).

        Fix 2 (blog issue 2): keeping only the action columns is exactly masking every other logit to
        -inf; no top-k / top-p filter follows (fix 3), so this IS the sampling distribution.
        """
        with self.lm_autocast():
            logits = self.causal_lm.lm_head(hidden)[..., self._action_ids]
        return logits.float() / temperature

    def _values(self, hidden_last_prompt: torch.Tensor, detach_input: bool) -> torch.Tensor | None:
        if self.value_head is None:
            return None
        # The blog stops the gradient here: value regression through the shared trunk destroys the
        # policy quickly. RL4VLA lets it through; `detach_input=False` is that ablation.
        return self.value_head(hidden_last_prompt.detach() if detach_input else hidden_last_prompt)

    # -- RL interface --------------------------------------------------------------------------------

    def forward(self, input_ids, attention_mask, pixel_values, target_tokens, *,
                patch_embeddings: torch.Tensor | None = None):
        """Teacher-forced pass: prompt + `target_tokens` (B, K) -> (logits (B, K, V), hidden (B, K, H)).

        Position k holds the prediction of target_tokens[:, k] (full vocabulary, for SFT's cross-entropy);
        hidden[:, 0] is the last prompt token's state (the value head's input). Pass `pixel_values=None` and
        `patch_embeddings` (B, 256, H), the caller's own `embed_images(pixel_values)` in the same graph, where it
        reads them too (SFT's auxiliary state head); unlike `evaluate_actions`, no stale reuse is guarded against.
        """
        if (pixel_values is None) == (patch_embeddings is None):
            raise ValueError("pass exactly one of pixel_values and patch_embeddings")
        patches = self.embed_images(pixel_values) if patch_embeddings is None else patch_embeddings
        k = target_tokens.shape[1]
        embeds, mask, position_ids = self._prefill_inputs(input_ids, attention_mask, patches, target_tokens[:, :-1])
        with self.lm_autocast():
            out = self.causal_lm.model(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids,
                                       use_cache=False)
            hidden = out.last_hidden_state[:, -k:]  # (B, K, H)
            return self.causal_lm.lm_head(hidden), hidden

    def evaluate_actions(self, input_ids, attention_mask, pixel_values, action_tokens, temperature: float = 1.0,
                         detach_value_input: bool = True, *,
                         patch_embeddings: torch.Tensor | None = None) -> ActionEvaluation:
        """Log-probs, entropies and values of stored `action_tokens` (B, 7), with gradients.

        Uses the same action-token mask and temperature as `generate_actions` (fix 3), so for the
        tokens a rollout sampled the log-probs agree with the rollout's. Pass `pixel_values=None` and the
        rollout's `patch_embeddings` (B, 256, H) to skip the frozen vision backbone and projector.
        """
        patches = self.image_patches(pixel_values, patch_embeddings)
        embeds, mask, position_ids = self._prefill_inputs(input_ids, attention_mask, patches, action_tokens[:, :-1])
        with self.lm_autocast():
            out = self.causal_lm.model(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids,
                                       use_cache=False)
        hidden = out.last_hidden_state[:, -ACTION_DIM:]  # (B, 7, H): the states that predict each action token
        log_probs = torch.log_softmax(self._action_logits(hidden, temperature), dim=-1)  # (B, 7, 256)
        columns = action_tokens - self._action_ids[0]
        logprobs = log_probs.gather(-1, columns.unsqueeze(-1)).squeeze(-1)  # (B, 7)
        entropy = -(log_probs.exp() * log_probs).sum(-1)  # (B, 7)
        return ActionEvaluation(logprobs, entropy, self._values(hidden[:, 0], detach_value_input))

    @torch.no_grad()
    def generate_actions(self, input_ids, attention_mask, pixel_values, temperature: float = 1.0,
                         greedy: bool = False, generator: torch.Generator | None = None, *,
                         decode: str | None = None, return_patch_embeddings: bool = False) -> ActionSample:
        """Sample (or argmax) the 7 action tokens with a KV cache, batched over padded prompts.

        Fix 1: the attention mask covers each row's padding in every cached step and position ids continue
        from each row's own count of real tokens, so the cached steps ignore padding too.
        Fix 3: the returned log-probs are those of the exact distribution sampled from.
        `decode` picks how the call runs ("Decoding the 7 action tokens" below): by default CUDA graphs on a GPU
        with SDPA or eager attention, else "dynamic". The modes, from eager to fully captured:
        "dynamic" (transformers' DynamicCache, the reference), "static" (the graphs' code run eagerly),
        "cuda_graph" (the 6 decode steps replayed as a graph; the default at 7B), "cuda_graph_prefill" (the towers
        and prefill captured too) and "cuda_graph_all" (the whole call as one graph; the default for models under
        PREFILL_GRAPH_MAX_PARAMETERS). A failed capture warns once and falls back: to eager decoding
        (`cuda_graph_error` says why) or, for "cuda_graph_all", to "cuda_graph_prefill" (`full_graph_error`).
        With `return_patch_embeddings` the result carries the (B, 256, H) image patch embeddings, for
        `evaluate_actions(..., patch_embeddings=...)`. After `compile_decoder_layers` the prefill and the decode
        steps run compiled halves of each layer around an eager cache write (see there).
        """
        with torch.compiler.set_stance("force_eager"):  # whole compiled layers eager here (a no-op unless compiled)
            decode = self._default_decode() if decode is None else decode
            decoder = self._decoder(input_ids.shape[0], input_ids.shape[1] + self.vision_backbone.num_patches, decode)
            graphed = isinstance(decoder, StaticCacheDecoder) and decode in ("cuda_graph_prefill", "cuda_graph_all")
            whole = None  # tokens, log-probs, values, logits, patches
            if graphed and decode == "cuda_graph_all":  # None: a custom generator or a failed capture (see there)
                whole = decoder.generate_graphed(input_ids, attention_mask, pixel_values, temperature, greedy,
                                                 generator)
            if whole is None:  # the prompt (as a graph where `graphed`, else eager), then the sampling loop
                prompt = decoder.prefill_graphed if graphed else partial(self._prompt, decoder)
                patches, hidden, values = prompt(input_ids, attention_mask, pixel_values)
                tokens, logprobs, logits = self._sample_tokens(decoder.step, hidden, temperature, greedy, generator)
                whole = tokens, logprobs, values, logits, patches
        tokens, logprobs, values, logits, patches = whole
        return ActionSample(tokens, logprobs, values, logits, patches if return_patch_embeddings else None)

    def _prompt(self, decoder, input_ids, attention_mask,
                pixel_values) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The prompt through the towers and the LM, filling `decoder`'s KV cache -> the (B, P, H) patch embeddings,
        the last prompt token's hidden state (B, H) and the value head's values (B,) (None without a head)."""
        patches = self.embed_images(pixel_values)  # (B, P, H)
        embeds, mask, position_ids = self._prefill_inputs(input_ids, attention_mask, patches)
        hidden = decoder.prefill(embeds, mask, position_ids)  # (B, H): last prompt token
        return patches, hidden, self._values(hidden, detach_input=True)

    def _sample_tokens(self, step: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor, temperature: float,
                       greedy: bool, generator: torch.Generator | None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The 7 action tokens, sampled (or argmax) one at a time from the last prompt token's hidden state (B, H),
        each fed back through `step` (a decoder's cached step: tokens (B,) -> the next hidden state (B, H)) -> the
        tokens (B, 7), their log-probs (B, 7) and the tempered logits over the 256 action tokens (B, 7, 256)."""
        tokens, logprobs, all_logits = [], [], []
        for i in range(ACTION_DIM):
            all_logits.append(self._action_logits(hidden, temperature))  # (B, 256)
            log_probs = torch.log_softmax(all_logits[-1], dim=-1)
            if greedy:
                column = log_probs.argmax(-1)
            else:
                column = torch.multinomial(log_probs.exp(), 1, generator=generator).squeeze(-1)
            tokens.append(self._action_ids[column])
            logprobs.append(log_probs.gather(-1, column[:, None]).squeeze(-1))
            if i < ACTION_DIM - 1:
                hidden = step(tokens[-1])  # (B, H)
        return torch.stack(tokens, 1), torch.stack(logprobs, 1), torch.stack(all_logits, 1)

    def _default_decode(self) -> str:
        """decode=None's mode: CUDA graphs on a GPU with SDPA or eager attention until a capture fails, the whole
        call as one graph for models under PREFILL_GRAPH_MAX_PARAMETERS (not after `compile_decoder_layers`: that
        pairing is not yet checked on a GPU), the decode steps' graph alone otherwise; else the eager "dynamic"."""
        lm = self.causal_lm
        graph_ok = (lm.config._attn_implementation in ("sdpa", "eager") and self.cuda_graph_error is None
                    and lm.get_input_embeddings().weight.device.type == "cuda")
        if not graph_ok:
            return "dynamic"
        small = sum(p.numel() for p in self.parameters()) < PREFILL_GRAPH_MAX_PARAMETERS
        return "cuda_graph_all" if small and self.compiled_halves is None else "cuda_graph"

    def _decoder(self, batch: int, prompt_length: int, decode: str | None) -> _DynamicCacheDecoder | StaticCacheDecoder:
        """The decoder for `generate_actions`: a cached CUDA graph when asked or by default on a GPU."""
        if decode not in (None, *DECODE_MODES):
            raise ValueError(f"decode must be one of {DECODE_MODES} or None, got {decode!r}")
        lm = self.causal_lm
        device = lm.get_input_embeddings().weight.device
        static_ok = lm.config._attn_implementation in ("sdpa", "eager")  # the 4-D masks we pass
        decode = self._default_decode() if decode is None else decode
        if decode == "dynamic":
            return _DynamicCacheDecoder(self)
        if not static_ok:
            raise OpenVLAError(f'decode="{decode}" needs SDPA or eager attention, not {lm.config._attn_implementation}')
        length = math.ceil((prompt_length + ACTION_DIM - 1) / STATIC_CACHE_MULTIPLE) * STATIC_CACHE_MULTIPLE
        if decode == "static":
            return StaticCacheDecoder(self, batch, length, cuda_graph=False)
        if device.type != "cuda":
            raise OpenVLAError(f'decode="{decode}" needs the model on a CUDA device')
        key = (batch, length)
        decoder = self.decode_graphs.get(key)
        if decoder is not None and decoder.fingerprint == _fingerprint(self):
            return decoder
        self.decode_graphs.pop(key, None)  # a replaced parameter: free the stale graph and its cache first
        try:
            decoder = self.decode_graphs[key] = StaticCacheDecoder(self, batch, length, cuda_graph=True)
        except Exception as err:  # any capture failure: the eager path is always correct
            self.cuda_graph_error = f"{type(err).__name__}: {err}"
            warnings.warn(f"openvla_patch: capturing the decode step as a CUDA graph failed ({self.cuda_graph_error});"
                          " decoding eagerly from now on", stacklevel=3)
            return _DynamicCacheDecoder(self)
        return decoder


# ---------------------------------------------------------------------------------------------------
# Decoding the 7 action tokens: the reference DynamicCache loop, and a static KV cache + CUDA graph
# ---------------------------------------------------------------------------------------------------
# The 6 cached decode steps of a rollout step are launch-bound: one step runs ~1,000-3,000 small kernels
# through HF's Llama and peft (29-105 ms at B=24 on an H100, against a 4.4 ms bandwidth floor). A CUDA
# graph records those launches once and replays them in one call (issue 13's probe: 51 -> 11 ms a step).
# Replay needs every tensor at a fixed address, so `StaticCacheDecoder` preallocates the KV cache for the
# whole sequence (prompt + 6 decode slots, rounded up to STATIC_CACHE_MULTIPLE) and feeds a step through
# fixed input buffers: the token, its position id and its cache slot are written into them before each
# replay. Attention runs over all slots with a 4-D mask built inside the graph (the prompt's padding and
# the slots filled so far), which transformers passes to the attention function unchanged, and our cache
# object writes each layer's new key/value at the slot: nothing depends on transformers' Cache internals.
# The graph is captured once per (batch size, cache length) and kept in `model.decode_graphs` with its KV
# cache (B x length x 512 KiB at 7B: 3.4 GiB at B=24, 13.5 GiB at B=96, held between calls); it reads the
# weights in place, so optimizer steps are seen, and it is captured anew if a parameter tensor was
# replaced (`_fingerprint`). The eager reference is `decode="dynamic"` (transformers' DynamicCache), also
# the default for flash-attention (which takes no 4-D mask); `decode="static"` runs the graph's code
# without capturing it (CPU tests).
#
# `decode="cuda_graph_prefill"` (small models' default in sessions 24-28, now the whole-call graph's fallback)
# captures the rest of the step too: the towers, the projector and the prefill into the same static cache, plus
# the value head (`_prompt`), as a second graph per prompt length, fed through copies of the token ids, mask and
# pixels. Small models' ~380 launches of towers and prefill cost ~14 ms of host time per call of 8 envs against
# ~4 ms of GPU work; captured, the tiny model's generate_actions for 16 envs took 5.9 ms instead of 11.1, with the
# same tokens and log-probs (H100, BENCHMARKS.md section 1, session 24). At 7B the prefill is compute-bound and
# its graph would pin the prefill's activations (GBs) in the graph's memory pool, so 7B keeps the decode graph
# alone, and so does a model after `compile_decoder_layers` (capturing the compiled halves' prefill is not yet
# checked).
#
# `decode="cuda_graph_all"` captures the whole call as one graph per (prompt length, greedy, temperature): `_prompt`,
# then the sampling loop (`_sample_tokens`) with its 6 decode steps run as kernels inside the capture (a graph
# cannot replay another graph while it is captured). With the prefill graph alone the call still cost ~6.5 ms of
# host time on an H100 (~100 small operations of the sampling loop and 7 graph replays, launch-bound), the bound of
# the tiny PPO loop; captured whole it is one replay and the copies of its outputs. Sampling draws from the default
# CUDA generator inside the graph (each replay advances its offset; `_capture` puts the generator back after the
# warm-up and capture, so a resumed run draws as an uninterrupted one): the tokens follow the eager path's
# distribution, not its draws; greedy tokens are identical. A caller's own `generator` (sampling) runs
# "cuda_graph_prefill" instead (keeping graphs per generator is not worth it), and so does every later call after a
# failed capture (`full_graph_error`; the other graphs stay in use). The default for models under
# PREFILL_GRAPH_MAX_PARAMETERS since session 29: on an H100 (`bench/throughput.py --sections tiny_rollout tiny_ppo`,
# BENCHMARKS.md section 1) its greedy tokens, log-probs and patches equalled "cuda_graph_prefill"'s exactly, two
# sampled calls drew differently, a call's host time fell 3.3 -> 1.6 ms, and tiny PPO at 16 envs ran 369 SPS
# against 349 in the same run.

DECODE_MODES = ("dynamic", "static", "cuda_graph", "cuda_graph_prefill", "cuda_graph_all")
PREFILL_GRAPH_MAX_PARAMETERS = 10**9
"""decode=None captures the whole call ("cuda_graph_all") for models with fewer parameters."""
STATIC_CACHE_MULTIPLE = 16
"""Static KV caches hold a multiple of this many slots, so that prompts of similar lengths share a graph."""


def _fingerprint(model: OpenVLAForActionPrediction) -> tuple:
    """What a captured graph depends on beyond shapes: the training flag, the layers it runs (transformers' or the
    compiled halves) and every parameter's address (the towers' and value head's too, for the prefill and whole-call
    graphs)."""
    return model.causal_lm.training, model.compiled_halves, tuple(p.data_ptr() for p in model.parameters())


def _attention_mask_4d(allowed: torch.Tensor, implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """(B, Q, K) bool "query may attend key" -> the (B, 1, Q, K) mask that transformers hands to the
    attention function as it is: bool for SDPA, additive 0 / dtype-min for eager (as its own masks)."""
    allowed = allowed[:, None]
    if implementation == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


class _DynamicCacheDecoder:
    """The eager reference: transformers' DynamicCache, the 2-D mask grown by one column per step (fix 1)."""

    def __init__(self, model: OpenVLAForActionPrediction):
        self.model = model

    def prefill(self, embeds: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """The (B, T, H) prompt -> hidden state (B, H) of its last token; fills the cache."""
        self.cache = DynamicCache(config=self.model.causal_lm.config)
        hidden = _run_lm(self.model, embeds, mask, position_ids, self.cache)
        self.mask, self.position_ids = mask, position_ids[:, -1:]
        return hidden[:, -1]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """The (B,) tokens just chosen -> hidden state (B, H) that predicts the next ones."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        self.position_ids = self.position_ids + 1
        embeds = self.model.causal_lm.get_input_embeddings()(tokens[:, None])  # (B, 1, H)
        return _run_lm(self.model, embeds, self.mask, self.position_ids, self.cache)[:, -1]


class _StaticKVCache:
    """Every layer's keys and values in preallocated (B, kv_heads, C, head_dim) buffers: the duck type of
    transformers' Cache that LlamaAttention uses (its `update` method)."""

    def __init__(self, config: LlamaConfig, batch: int, length: int, dtype: torch.dtype, device: torch.device):
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        shape = (batch, config.num_key_value_heads, length, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.values = [torch.zeros_like(k) for k in self.keys]
        self.slot = torch.zeros(1, dtype=torch.long, device=device)  # where the next decode token goes

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        n = key_states.shape[2]
        if n > 1:  # the prompt: slots 0..n-1, attended as they are (as a DynamicCache would)
            keys[:, :, :n].copy_(key_states)
            values[:, :, :n].copy_(value_states)
            return key_states, value_states
        keys.index_copy_(2, self.slot, key_states)  # a decode token: at `slot`; all slots attended, masked
        values.index_copy_(2, self.slot, value_states)
        return keys, values


class StaticCacheDecoder:
    """Decode steps over a static KV cache for `batch` sequences of up to `length` tokens, captured as a
    CUDA graph and replayed when `cuda_graph`, else run eagerly (see the comment above)."""

    def __init__(self, model: OpenVLAForActionPrediction, batch: int, length: int, cuda_graph: bool):
        lm = model.causal_lm
        weight = lm.get_input_embeddings().weight
        self.model, self.length, self.fingerprint = model, length, _fingerprint(model)
        self.cache = _StaticKVCache(lm.config, batch, length, weight.dtype, weight.device)
        # The inputs of a decode step, written in place before it runs:
        self.tokens = torch.full((batch, 1), model.config.action_token_ids.start, device=weight.device)  # (B, 1)
        self.position_ids = torch.zeros((batch, 1), dtype=torch.long, device=weight.device)  # (B, 1)
        self.key_valid = torch.ones((batch, length), dtype=torch.bool, device=weight.device)  # (B, C) not padding
        self.graph: torch.cuda.CUDAGraph | None = None
        # (graph, static inputs, static outputs) by prompt length, and by (prompt length, greedy, temperature):
        self.prefill_graphs: dict[int, tuple] = {}
        self.full_graphs: dict[tuple[int, bool, float], tuple] = {}
        if cuda_graph:  # its warm-up writes slot 0, which every prefill overwrites
            self.graph, self.hidden = _capture(self._decode_step)  # hidden (B, H), overwritten by each replay

    def _decode_step(self) -> torch.Tensor:
        lm = self.model.causal_lm
        slots = torch.arange(self.length, device=self.key_valid.device)
        allowed = self.key_valid & (slots <= self.cache.slot)  # (B, C): real prompt tokens, decode slots so far
        mask = _attention_mask_4d(allowed[:, None], lm.config._attn_implementation, self.cache.keys[0].dtype)
        return _run_lm(self.model, lm.get_input_embeddings()(self.tokens), mask, self.position_ids, self.cache)[:, -1]

    def prefill(self, embeds: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """The (B, T, H) prompt -> hidden state (B, H) of its last token; fills cache slots 0..T-1."""
        lm = self.model.causal_lm
        n = embeds.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=mask.device).tril()
        allowed = causal & mask[:, None, :].bool()  # (B, T, T)
        hidden = _run_lm(self.model, embeds, _attention_mask_4d(allowed, lm.config._attn_implementation, embeds.dtype),
                         position_ids, self.cache)
        self.key_valid[:, :n] = mask.bool()
        self.key_valid[:, n:] = True
        self.cache.slot.fill_(n - 1)  # `step` advances it before writing
        self.position_ids.copy_(position_ids[:, -1:])
        return hidden[:, -1]

    def prefill_graphed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """`model._prompt` (towers, projector, prefill into this cache, value head) captured as a CUDA graph per
        prompt length on first use and replayed (decode="cuda_graph_prefill"; see the comment above) -> copies of
        its outputs."""
        inputs = (input_ids, attention_mask, pixel_values)
        if self.model.cuda_graph_error is not None:  # a capture failed before: the eager path is always correct
            return self.model._prompt(self, *inputs)
        try:
            return _replayed(self.prefill_graphs, input_ids.shape[1], partial(self.model._prompt, self), inputs)
        except Exception as err:
            self.model.cuda_graph_error = f"{type(err).__name__}: {err}"
            warnings.warn("openvla_patch: capturing the prefill as a CUDA graph failed "
                          f"({self.model.cuda_graph_error}); running it eagerly from now on", stacklevel=3)
            return self.model._prompt(self, *inputs)

    def generate_graphed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor,
                         temperature: float, greedy: bool, generator: torch.Generator | None) -> tuple | None:
        """`whole_call` captured as one CUDA graph per (prompt length, greedy, temperature) on first use and replayed
        (decode="cuda_graph_all"; see the comment above) -> copies of its outputs; None where it does not run, and
        the caller runs "cuda_graph_prefill" instead: when sampling with a caller's own `generator`, or after a
        failed capture (this one warns once and sets `model.full_graph_error`)."""
        model = self.model
        failed = model.full_graph_error is not None or model.cuda_graph_error is not None
        if failed or (generator is not None and not greedy):
            return None
        function = partial(self.whole_call, temperature=temperature, greedy=greedy)
        try:
            return _replayed(self.full_graphs, (input_ids.shape[1], greedy, float(temperature)), function,
                             (input_ids, attention_mask, pixel_values))
        except Exception as err:  # not `cuda_graph_error`: the prefill and decode graphs are still good
            model.full_graph_error = f"{type(err).__name__}: {err}"
            warnings.warn("openvla_patch: capturing generate_actions as one CUDA graph failed "
                          f'({model.full_graph_error}); running decode="cuda_graph_prefill" from now on',
                          stacklevel=3)
            return None

    def whole_call(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor,
                   temperature: float, greedy: bool) -> tuple:
        """What decode="cuda_graph_all" captures: `generate_actions` over this cache, sampling from the default
        generator, its decode steps run as kernels (`step(eager=True)`) -> tokens (B, 7), log-probs (B, 7), values
        (B,) or None, logits (B, 7, 256), patch embeddings (B, P, H). Every run starts from the prefill, which
        writes the cache's slot, the position ids and the padding mask afresh: replays do not depend on each other."""
        patches, hidden, values = self.model._prompt(self, input_ids, attention_mask, pixel_values)
        step = partial(self.step, eager=True)
        tokens, logprobs, logits = self.model._sample_tokens(step, hidden, temperature, greedy, generator=None)
        return tokens, logprobs, values, logits, patches

    def step(self, tokens: torch.Tensor, eager: bool = False) -> torch.Tensor:
        """The (B,) tokens just chosen -> hidden state (B, H) that predicts the next ones. `eager`: run the step's
        kernels even where its graph was captured (inside another capture, which cannot replay a graph)."""
        self.tokens.copy_(tokens[:, None])
        self.position_ids += 1
        self.cache.slot += 1
        if self.graph is None or eager:
            return self._decode_step()
        self.graph.replay()
        return self.hidden


def _capture(function: Callable[[], Any]) -> tuple[torch.cuda.CUDAGraph, Any]:
    """`function()` captured as a CUDA graph -> (the graph, the outputs that each replay overwrites). Two warm-up
    calls on a side stream first, so that lazy initialisations do not happen during capture
    (https://pytorch.org/docs/stable/notes/cuda.html#cuda-graphs). The default CUDA generator's state is put back
    afterwards: warm-up and capture must not consume its stream (a graph that samples would otherwise make a run's
    draws depend on when this process captured, and a resumed run differ from an uninterrupted one)."""
    rng = torch.cuda.get_rng_state()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            function()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = function()
    torch.cuda.set_rng_state(rng)
    return graph, outputs


def _replayed(graphs: dict, key: Hashable, function: Callable[..., tuple], inputs: tuple[torch.Tensor, ...]) -> tuple:
    """`function(*inputs)` by replaying `graphs[key]`, captured on first use over copies of `inputs` (the graph's
    static inputs, which each call's inputs are copied into) -> copies of its outputs (the next replay overwrites
    the graph's own)."""
    entry = graphs.get(key)
    if entry is None:
        static = tuple(x.clone() for x in inputs)
        graph, outputs = _capture(partial(function, *static))
        entry = graphs[key] = (graph, static, outputs)
    graph, static, outputs = entry
    for buffer, new in zip(static, inputs, strict=True):
        buffer.copy_(new)
    graph.replay()
    return tuple(None if out is None else out.clone() for out in outputs)


# ---------------------------------------------------------------------------------------------------
# Compiled decoder layers (the teacher-forced passes of the update)
# ---------------------------------------------------------------------------------------------------
# Between its matmuls a LoRA decoder layer runs dozens of small elementwise kernels: the LoRA scale and add
# of its 7 linear layers, two fp32 RMSNorms and their casts, RoPE, SiLU x up. torch.compile fuses them; at
# 7B shapes that took an update micro-batch from 1.015 to 0.693 s (BENCHMARKS.md 1, measured with static
# shapes and fp32 intermediates, before the two options below; bench/throughput.py --profile-compile now
# calls this function). `compile_decoder_layers` compiles each decoder layer's forward in place
# (`nn.Module.compile`): the module tree and state dict, the peft LoRA wrappers, `save_adapter`, gradient
# checkpointing (transformers checkpoints inside the layer's `forward`, so the compiled graph holds the
# recompute) and the scripts' gradient all-reduce are unchanged, and so is the gradient: the same function,
# rounded differently (tests/test_speed.py). Per layer rather than the whole model: the layers share one
# graph (their parameters are its inputs), so compiling takes one layer's time and works the same with
# checkpointing. `dynamic=True`: micro-batch sizes and prompt lengths change between calls (the last
# micro-batch, the samples left in the loss, other instructions), and one graph with symbolic sizes serves
# them all where static shapes would recompile per new size (a size of 1 still gets its own graph).
#
# Passes with a KV cache cannot call the compiled layers: each layer writes its own key / value buffers, picked by
# its `layer_idx`, which torch.compile specialises on: one graph per layer, and past 8 layers (torch's recompile
# limit) it gives up on the layer's forward for good, in the update too. So `generate_actions` runs under
# `torch.compiler.set_stance("force_eager")`, and its prefill (~280 tokens x B; eager 2.0-2.1x its floor at 7B,
# from the same elementwise work, issue 13) and its 6 decode steps run each layer as two compiled halves around an
# eager middle (`_run_lm`): `_layer_before_cache` (input RMSNorm, LoRA q/k/v projections, RoPE -> q, k, v), then
# eagerly the cache write and the attention function with the mask transformers would pass it, then
# `_layer_after_attention` (o_proj, residual, post-attention RMSNorm, MLP, residual). The halves are functions of
# tensors and the layer module, whose parameters are graph inputs and whose `layer_idx` they never read: all layers
# share one graph per half, plus one for the decode steps' single token (tests/test_speed.py counts them). They are
# the statements of transformers' LlamaDecoderLayer and LlamaAttention, regrouped; HF's own forward stays the eager
# reference (`compiled_halves` None). The decode step's CUDA graph is captured from the halves as from any other
# kernels (after two warm-up calls that compile them); a captured graph remembers which layers it ran
# (`_fingerprint`). Measured at 7B (BENCHMARKS.md 1, session 17, prefill only): the prefill 1.33-1.34x faster, the
# rollout step 1.25-1.30x, tokens identical to eager, log-probs within 5e-4.
#
# So the rollout and the update compute with fused kernels, yet PPO's first ratio must stay 1: the rollout's
# log-probs and the learner's must be the same function, rounded the same way.
# In fp32 they agree within 1e-5 (tested). In bf16 a fused kernel keeps its intermediates in fp32 where eager
# rounds after every operation: that moved the tiny model's composite (7-token) log-prob by 2e-3 to 6e-3 against
# the eager rollout (CPU, 10 batches; eager against eager: 0 to 5e-5). `emulate_precision_casts` makes the
# fused kernels round after each operation as eager does (0 in 8 of those 10 batches, at most 5e-4), at the
# cost of a few conversions in registers.
# Not calling this function is the eager path, the reference.

COMPILE_OPTIONS = {"emulate_precision_casts": True}


def compile_decoder_layers(model: OpenVLAForActionPrediction, dynamic: bool = True) -> int:
    """Compile each decoder layer of the language model in place, for every pass without a KV cache, and the
    halves of a layer that the rollout's prefill and decode steps run (see the comment above); compilation happens at the first
    such pass. `dynamic=False`: a graph per input shape (the bench's comparison). -> the number of layers compiled."""
    layers = model.causal_lm.model.layers  # `causal_lm` sees through the peft wrapper
    for layer in layers:
        layer.compile(dynamic=dynamic, options=COMPILE_OPTIONS)
    model.compiled_halves = _compiled_layer_halves(dynamic)
    return len(layers)


@cache  # one pair per process, shared by every model: their graphs too (a new wrapper would compile anew)
def _compiled_layer_halves(dynamic: bool) -> tuple[Callable, Callable]:
    return tuple(torch.compile(half, dynamic=dynamic, options=COMPILE_OPTIONS)
                 for half in (_layer_before_cache, _layer_after_attention))


def _layer_before_cache(layer: nn.Module, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """A decoder layer up to its KV cache: (B, T, H) -> query, key, value (B, heads, T, head_dim), RoPE applied."""
    attn = layer.self_attn
    x = layer.input_layernorm(hidden)
    shape = (*x.shape[:-1], -1, attn.head_dim)
    query, key, value = (proj(x).view(shape).transpose(1, 2) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
    return (*apply_rotary_pos_emb(query, key, cos, sin), value)


def _layer_after_attention(layer: nn.Module, hidden: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
    """The rest of a decoder layer: its input (B, T, H) and the attention output (B, T, heads, head_dim) -> output."""
    hidden = hidden + layer.self_attn.o_proj(attended.flatten(-2))
    return hidden + layer.mlp(layer.post_attention_layernorm(hidden))


def _run_lm(model: OpenVLAForActionPrediction, embeds: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor,
            kv_cache) -> torch.Tensor:
    """The prompt (B, T, H) or one decode step's token (B, 1, H) through the LM, writing every layer's keys and values
    into `kv_cache` -> the final hidden states (B, T, H). `mask`: 2-D padding mask, or a ready 4-D one. transformers'
    LlamaModel, or after `compile_decoder_layers` its loop over the compiled layer halves (the comment above)."""
    llama = model.causal_lm.model
    with model.lm_autocast():
        if model.compiled_halves is None:
            return llama(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, past_key_values=kv_cache,
                         use_cache=True).last_hidden_state
        before_cache, after_attention = model.compiled_halves
        mask = create_causal_mask(config=llama.config, inputs_embeds=embeds, attention_mask=mask,
                                  past_key_values=kv_cache, position_ids=position_ids)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(llama.config._attn_implementation, eager_attention_forward)
        cos, sin = llama.rotary_emb(embeds, position_ids)
        hidden = embeds
        with torch.compiler.set_stance("default"):  # under generate_actions' "force_eager", for the layers' forward
            for layer in llama.layers:
                attn = layer.self_attn
                query, key, value = before_cache(layer, hidden, cos, sin)
                key, value = kv_cache.update(key, value, attn.layer_idx)  # eager: this layer's own buffers
                attended, _ = attention(attn, query, key, value, mask, scaling=attn.scaling, position_ids=position_ids,
                                        dropout=attn.attention_dropout if attn.training else 0.0)
                hidden = after_attention(layer, hidden, attended)
        return llama.norm(hidden)


# ---------------------------------------------------------------------------------------------------
# Checkpoint reading and writing (the released layout)
# ---------------------------------------------------------------------------------------------------


def _to_checkpoint_key(name: str) -> str:
    return name.replace(".ls1.gamma", ".ls1.scale_factor").replace(".ls2.gamma", ".ls2.scale_factor")


def _from_checkpoint_key(name: str) -> str:
    return name.replace(".ls1.scale_factor", ".ls1.gamma").replace(".ls2.scale_factor", ".ls2.gamma")


def _weight_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.exists():
        return [directory / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    single = directory / "model.safetensors"
    if single.exists():
        return [single]
    raise OpenVLAError(f"{directory} holds no model.safetensors or model.safetensors.index.json")


def read_state_dict(directory: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of a released-format checkpoint, under their released names, unused ones dropped."""
    state = {}
    for path in _weight_files(directory):
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            for key in f.keys():
                if not key.startswith(UNUSED_CHECKPOINT_PREFIXES):
                    state[key] = f.get_tensor(key)
    return state


def _load_strict(model: OpenVLAForActionPrediction, state: dict[str, torch.Tensor]) -> None:
    """Load released-name tensors into `model`; any missing, unexpected or mis-shaped tensor is an error."""
    expected = {_to_checkpoint_key(k): v for k, v in model.state_dict().items() if not k.startswith("value_head.")}
    problems = []
    for label, names in (("missing", sorted(set(expected) - set(state))), ("unexpected", sorted(set(state) - set(expected)))):
        if names:
            more = f" (+{len(names) - 5} more)" if len(names) > 5 else ""
            problems.append(f"{label} tensors: {', '.join(names[:5])}{more}")
    if problems:
        raise OpenVLAError("checkpoint does not match the OpenVLA architecture in its config.json: " + "; ".join(problems))
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise OpenVLAError(f"tensor {key} has shape {tuple(tensor.shape)}, the config implies {tuple(expected[key].shape)}")
    model.load_state_dict({_from_checkpoint_key(k): v for k, v in state.items()}, strict=False, assign=True)


REMOTE_CODE_GLOB = "*_prismatic.py"
"""The released remote code beside openvla-7b's weights: configuration_, modeling_, processing_prismatic.py."""


def released_preprocessor_config(image_size: int = 224) -> dict[str, Any]:
    """openvla-7b's preprocessor_config.json: the fields `PrismaticImageProcessor` reads.

    `means`/`stds` are timm's ImageNet stats, but the transform applies `tvf_normalize_params`, which
    hold them rounded to bf16 (DINOV2_MEAN / DINOV2_STD), as released.
    """
    sizes = [[3, image_size, image_size]] * 2
    return {
        "auto_map": {"AutoImageProcessor": "processing_prismatic.PrismaticImageProcessor",
                     "AutoProcessor": "processing_prismatic.PrismaticProcessor"},
        "image_processor_type": "PrismaticImageProcessor",
        "image_resize_strategy": "resize-naive",
        "input_sizes": sizes,
        "interpolations": ["bicubic", "bicubic"],
        "means": [[0.485, 0.456, 0.406], list(SIGLIP_MEAN)],
        "processor_class": "PrismaticProcessor",
        "stds": [[0.229, 0.224, 0.225], list(SIGLIP_STD)],
        "tvf_crop_params": [{"output_size": [image_size, image_size]}] * 2,
        "tvf_do_letterbox": False,
        "tvf_letterbox_fill": None,
        "tvf_normalize_params": [{"inplace": False, "mean": list(DINOV2_MEAN), "std": list(DINOV2_STD)},
                                 {"inplace": False, "mean": list(SIGLIP_MEAN), "std": list(SIGLIP_STD)}],
        # interpolation 3 = PIL.Image.BICUBIC (see resize_like_released)
        "tvf_resize_params": [{"antialias": True, "interpolation": 3, "max_size": None,
                               "size": [image_size, image_size]}] * 2,
        "use_fused_vision_backbone": True,
    }


def _auto_map_resolves(auto_map: dict[str, Any], directory: Path) -> bool:
    """Whether every class an `auto_map` names can be found: "module.Class" needs `directory/module.py`;
    "owner/repo--module.Class" points at a hub repository and needs nothing here."""
    refs = [r for v in auto_map.values() for r in (v if isinstance(v, list) else [v]) if r]
    return bool(refs) and all("--" in r or (directory / f"{r.rsplit('.', 1)[0]}.py").exists() for r in refs)


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, directory: str | Path) -> None:
    """`tokenizer.save_pretrained(directory)`, with tokenizer.json's BPE merges written as "a b" strings.

    tokenizers >= 0.20 writes each merge as a pair ["a", "b"], which tokenizers 0.19.1 (the version the
    original OpenVLA stack pins) cannot read ("data did not match any variant of untagged enum
    ModelWrapper"); every version reads the string form, which the released tokenizer.json uses. Only a
    merge with a space inside a piece needs the pair form; Llama pieces have none (spaces are "▁").
    """
    tokenizer.save_pretrained(str(directory))
    path = Path(directory) / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    merges = data["model"].get("merges", [])
    if any(not isinstance(m, str) for m in merges) and not any(" " in piece for m in merges for piece in m):
        data["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in merges]
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")


def save_pretrained(model: OpenVLAForActionPrediction, tokenizer: PreTrainedTokenizerBase, directory: str | Path,
                    dtype: torch.dtype = torch.bfloat16, max_shard_bytes: int = 4 * 2**30,
                    extra_tensors: dict[str, torch.Tensor] | None = None,
                    remote_code_from: str | Path | None = None) -> Path:
    """Write a full checkpoint in the released layout (config.json with norm_stats, sharded safetensors
    with the released key names, tokenizer files, preprocessor_config.json), atomically: a temporary
    directory renamed at the end.

    A LoRA model is saved merged. `extra_tensors` are written as they are (released key names).
    `remote_code_from`: the base checkpoint directory. Its `*_prismatic.py` files (the released remote
    code, which openvla-7b ships) are copied unchanged, so that `AutoModelForVision2Seq.from_pretrained(
    directory, trust_remote_code=True)` and `AutoProcessor` load the result wherever the base loads;
    config.json keeps an `auto_map` only where the modules it names are there.
    """
    directory = Path(directory)
    lm = model.language_model
    state = {}
    with contextlib.ExitStack() as stack:
        if hasattr(lm, "merge_adapter"):
            lm.merge_adapter()
            stack.callback(lm.unmerge_adapter)
        for name, tensor in model.causal_lm.state_dict().items():
            if "lora_" not in name and "base_layer" not in name:
                state["language_model." + name] = tensor
            elif name.endswith("base_layer.weight") or name.endswith("base_layer.bias"):
                state["language_model." + name.replace(".base_layer", "")] = tensor
        for prefix, module in (("vision_backbone.", model.vision_backbone), ("projector.", model.projector)):
            for name, tensor in module.state_dict().items():
                state[_to_checkpoint_key(prefix + name)] = tensor
        state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in state.items()}
    state.update(extra_tensors or {})
    # Llama ties nothing in OpenVLA: lm_head and embed_tokens are separate tensors.
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent if directory.parent.exists() else None))
    try:
        shards, current, size = [], {}, 0
        for key in sorted(state):
            nbytes = state[key].numel() * state[key].element_size()
            if current and size + nbytes > max_shard_bytes:
                shards.append(current)
                current, size = {}, 0
            current[key] = state[key]
            size += nbytes
        shards.append(current)
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(tmp / fname), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, fname))
        total = sum(t.numel() * t.element_size() for t in state.values())
        (tmp / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
        )
        for source in sorted(Path(remote_code_from).glob(REMOTE_CODE_GLOB)) if remote_code_from else []:
            shutil.copyfile(source, tmp / source.name)
        config = model.config.to_dict()
        config.update({"architectures": ["OpenVLAForActionPrediction"], "model_type": "openvla",
                       "torch_dtype": str(dtype).removeprefix("torch.")})
        if not _auto_map_resolves(config.get("auto_map", {}), tmp):
            config.pop("auto_map", None)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        processor_config = released_preprocessor_config(model.config.image_sizes[0])
        if not _auto_map_resolves(processor_config["auto_map"], tmp):
            processor_config.pop("auto_map")
        (tmp / "preprocessor_config.json").write_text(json.dumps(processor_config, indent=2))
        save_tokenizer(tokenizer, tmp)
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


# ---------------------------------------------------------------------------------------------------
# Loading: path resolution, dtype, 4-bit, LoRA, gradient checkpointing, adapters
# ---------------------------------------------------------------------------------------------------


def resolve_vla_path(vla_path: str) -> Path:
    """`tiny` -> the cached tiny checkpoint (made on first use); a directory -> itself; else a hub id."""
    if vla_path == "tiny":
        return ensure_tiny_openvla()
    path = Path(vla_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise OpenVLAError(f"{path} has no config.json: pass an OpenVLA checkpoint directory")
        return path
    if path.exists() or vla_path.startswith((".", "/", "~")) or vla_path.count("/") != 1:
        raise OpenVLAError(f"checkpoint path {vla_path!r} does not exist")
    try:
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.safetensors", "tokenizer*", "*.model", REMOTE_CODE_GLOB]
        return Path(snapshot_download(vla_path, allow_patterns=patterns))
    except Exception as err:  # offline, unknown repo, no permission: all end the same way for the user
        raise OpenVLAError(
            f"could not fetch {vla_path!r} from the Hugging Face hub ({type(err).__name__}); download it where you "
            f"have internet (`hf download {vla_path} --local-dir openvla-7b`) and pass --vla-path ./openvla-7b"
        ) from None


def read_config(directory: str | Path) -> OpenVLAConfig:
    return OpenVLAConfig.from_dict(json.loads((Path(directory) / "config.json").read_text()))


@dataclass
class LoraSettings:
    """LoRA on the language model (peft). Defaults: the blog's / RL4VLA's r=32 on all LM linear layers."""

    rank: int = 32
    alpha: int = 16
    dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"


def _quantize_language_model_4bit(lm: LlamaForCausalLM, compute_dtype: torch.dtype) -> None:
    """Swap every linear layer of the Llama decoder for a bitsandbytes NF4 one (lm_head stays as is)."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise OpenVLAError("--load-in-4bit needs bitsandbytes: pip install bitsandbytes") from None
    for parent in list(lm.model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=compute_dtype, quant_type="nf4", device="meta")
                q.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, quant_type="nf4")
                if child.bias is not None:
                    q.bias = nn.Parameter(child.bias.data, requires_grad=False)
                setattr(parent, name, q)


def _rebuild_buffers(model: OpenVLAForActionPrediction) -> None:
    """Recompute the non-persistent buffers (rotary frequencies, action ids) of a meta-built model."""
    lm = model.causal_lm
    device = lm.get_input_embeddings().weight.device
    lm.model.rotary_emb = type(lm.model.rotary_emb)(config=lm.config).to(device)
    model._action_ids = torch.arange(model.config.action_token_ids.start, model.config.base_vocab_size, device=device)


def _cast_keeping_buffers(model: nn.Module, dtype: torch.dtype) -> None:
    """`model.to(dtype)` for parameters and saved buffers only: non-persistent buffers keep their dtype.

    They are computed, not loaded: Llama's rotary `inv_freq` / `original_inv_freq` are fp32, and the
    released stack (transformers `from_pretrained(torch_dtype=bfloat16)`) never casts them. A bf16
    `inv_freq` (0.3164 instead of 0.3162) shifts every RoPE angle of a bf16 run.
    """
    saved = set(model.state_dict())
    computed = {name: buf for name, buf in model.named_buffers() if name not in saved}
    model.to(dtype)
    for name, buf in computed.items():
        owner, _, attr = name.rpartition(".")
        model.get_submodule(owner).register_buffer(attr, buf, persistent=False)


def random_openvla(config: OpenVLAConfig, device: torch.device | str, dtype: torch.dtype = torch.bfloat16) -> OpenVLAForActionPrediction:
    """A model of `config`'s sizes with N(0, 0.02) weights, built directly on `device` (for benchmarks
    at 7B shapes: cost does not depend on the weight values)."""
    with torch.device("meta"):
        model = OpenVLAForActionPrediction(config)
    model.to_empty(device=device)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    _rebuild_buffers(model)
    _cast_keeping_buffers(model, dtype)
    return model


def _pick_attention(requested: str | None, device: torch.device, dtype: torch.dtype) -> str:
    if requested:
        return requested
    try:
        import flash_attn  # noqa: F401

        return "flash_attention_2" if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16) else "sdpa"
    except ImportError:
        return "sdpa"


def load_vla(
    vla_path: str,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    load_in_4bit: bool = False,
    lora: LoraSettings | None = None,
    adapter_path: str | Path | None = None,
    trainable_adapter: bool = True,
    with_value_head: bool = False,
    gradient_checkpointing: bool = False,
    attn_implementation: str | None = None,
) -> tuple[OpenVLAForActionPrediction, OpenVLAProcessor]:
    """Load an OpenVLA checkpoint (hub id, local directory, or "tiny") -> (model, processor).

    Without LoRA every parameter is trainable (full fine-tuning, for small models). With `lora` or
    `adapter_path`, only the LoRA weights (fp32) and the value head are: the vision backbone,
    projector and base LM are frozen. `load_in_4bit` quantises the LM's decoder linear layers to NF4
    (vision, projector, embeddings, lm_head and value head stay in `dtype`).
    """
    directory = resolve_vla_path(vla_path)
    config = read_config(directory)
    with torch.device("meta"):  # no random init of 7.5B parameters that the checkpoint overwrites
        model = OpenVLAForActionPrediction(config, with_value_head=False)
    _load_strict(model, read_state_dict(directory, "cpu"))
    _rebuild_buffers(model)
    model = prepare_model(model, device=device, dtype=dtype, load_in_4bit=load_in_4bit, lora=lora,
                          adapter_path=adapter_path, trainable_adapter=trainable_adapter,
                          with_value_head=with_value_head, gradient_checkpointing=gradient_checkpointing,
                          attn_implementation=attn_implementation)
    tokenizer = LlamaTokenizer.from_pretrained(str(directory))  # OpenVLA is Llama-2 only
    return model, OpenVLAProcessor(tokenizer, image_size=config.image_sizes[0])


def prepare_model(
    model: OpenVLAForActionPrediction,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    load_in_4bit: bool = False,
    lora: LoraSettings | None = None,
    adapter_path: str | Path | None = None,
    trainable_adapter: bool = True,
    with_value_head: bool = False,
    gradient_checkpointing: bool = False,
    attn_implementation: str | None = None,
) -> OpenVLAForActionPrediction:
    """The loading options of `load_vla`, applied to a model in memory (used by `load_vla`, and by
    benchmarks on `random_openvla` models)."""
    device = torch.device(device)
    if load_in_4bit and lora is None and adapter_path is None:
        raise OpenVLAError("--load-in-4bit needs LoRA: 4-bit base weights cannot be trained directly")
    if device.type == "cuda":
        # PyTorch's cuDNN attention fails at run time on SigLIP's head size 72 at batch 96 (seen on H100,
        # torch 2.11); the flash / memory-efficient SDPA kernels handle every shape.
        torch.backends.cuda.enable_cudnn_sdp(False)
    _cast_keeping_buffers(model, dtype)
    model.causal_lm.config._attn_implementation = _pick_attention(attn_implementation, device, dtype)
    if load_in_4bit:
        _quantize_language_model_4bit(model.causal_lm, compute_dtype=dtype)
    if with_value_head:
        model.value_head = ValueHead(model.causal_lm.config.hidden_size)  # fp32, fresh unless loaded below
    model.to(device)
    if lora is not None or adapter_path is not None:
        _attach_lora(model, lora, adapter_path, trainable_adapter)
    if gradient_checkpointing:
        model.causal_lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


@contextlib.contextmanager
def _bitsandbytes_warnings_muted():
    """Mute bitsandbytes' logger while peft is first imported without 4-bit.

    peft imports bitsandbytes whenever it is installed (peft/helpers.py, peft/tuners/lora/bnb.py), and
    that import logs "Failed to load CPU gemm_4bit_forward from kernels-community" on CPUs with
    AVX512-BF16 (a CPU 4-bit kernel it could not fetch): noise for every LoRA run that is not 4-bit.
    Hiding bitsandbytes from peft instead would break a later 4-bit load in the same process. A 4-bit
    load imports bitsandbytes before peft (`_quantize_language_model_4bit`), so its messages still show.
    """
    logger = logging.getLogger("bitsandbytes")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _peft_deprecation_muted():
    """peft (0.21) reads `model.is_gradient_checkpointing`, which transformers 5.2x deprecates with a FutureWarning
    at every LoRA load: noise that names neither our code nor anything a user can change."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.* is deprecated", category=FutureWarning)
        yield


def _attach_lora(model: OpenVLAForActionPrediction, lora: LoraSettings | None, adapter_path, trainable: bool) -> None:
    with _bitsandbytes_warnings_muted():
        from peft import LoraConfig, PeftModel, get_peft_model
        from peft.tuners.tuners_utils import BaseTunerLayer

    for p in model.parameters():
        p.requires_grad_(False)
    if adapter_path is not None:
        adapter_path = Path(adapter_path)
        if not (adapter_path / "adapter_config.json").exists():
            raise OpenVLAError(f"{adapter_path} holds no LoRA adapter (adapter_config.json)")
        with _peft_deprecation_muted():
            model.language_model = PeftModel.from_pretrained(model.language_model, str(adapter_path),
                                                             is_trainable=trainable)
        _load_vision_beside_adapter(model, adapter_path, trainable)
        head_file = adapter_path / ADAPTER_VALUE_HEAD_FILE
        if model.value_head is not None and head_file.exists():
            with safe_open(str(head_file), framework="pt", device="cpu") as f:
                model.value_head.load_state_dict({k: f.get_tensor(k) for k in f.keys()})
    else:
        peft_config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                 target_modules=lora.target_modules, init_lora_weights="gaussian")
        with _peft_deprecation_muted():
            model.language_model = get_peft_model(model.language_model, peft_config)
    for p in model.language_model.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # LoRA weights in fp32 (the blog's setup), whatever the base dtype
    for module in model.language_model.modules():
        if isinstance(module, BaseTunerLayer):
            # ... but computing in the base dtype under `lm_autocast`: no upcast of the layer's input.
            module.cast_input_dtype_enabled = False
    if model.value_head is not None:
        model.value_head.requires_grad_(True)


def save_adapter(model: OpenVLAForActionPrediction, directory: str | Path, base_path: str) -> None:
    """Write the LoRA adapter (peft format) and the value head into `directory` (which must exist)."""
    directory = Path(directory)
    lm = model.language_model
    if not hasattr(lm, "save_pretrained") or not hasattr(lm, "peft_config"):
        raise OpenVLAError("save_adapter needs a model loaded with LoRA")
    lm.peft_config["default"].base_model_name_or_path = base_path
    lm.save_pretrained(str(directory), save_embedding_layers=False)  # LoRA only; no hub lookup of the base
    if model.value_head is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.value_head.state_dict().items()},
                  str(directory / ADAPTER_VALUE_HEAD_FILE))
    vision = vision_modules(model)
    if any(p.requires_grad for p in vision.parameters()):  # trained by RL (`make_vision_trainable`)
        save_file({n: p.detach().cpu().contiguous() for n, p in vision.named_parameters()},
                  str(directory / ADAPTER_VISION_FILE))


def vision_modules(model: OpenVLAForActionPrediction) -> nn.ModuleDict:
    """The vision towers and the projector, under the names of the released checkpoint."""
    return nn.ModuleDict({"vision_backbone": model.vision_backbone, "projector": model.projector})


def make_vision_trainable(model: OpenVLAForActionPrediction) -> None:
    """Train the vision towers and the projector too (full fine-tuning, fp32 master weights): RL can then fix
    what the image features miss, not only how the LM reads them. `save_adapter` writes them beside the
    adapter (ADAPTER_VISION_FILE) and loading the adapter restores them."""
    vision_modules(model).float().requires_grad_(True)


def _load_vision_beside_adapter(model: OpenVLAForActionPrediction, adapter_path: Path, trainable: bool) -> None:
    file = adapter_path / ADAPTER_VISION_FILE
    if not file.exists():
        return
    modules = vision_modules(model).float()  # as they were trained: fp32
    with safe_open(str(file), framework="pt", device="cpu") as f:
        modules.load_state_dict({k: f.get_tensor(k) for k in f.keys()})
    modules.requires_grad_(trainable)


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that training changes (LoRA + value head, or all), detached copies on the CPU."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


# ---------------------------------------------------------------------------------------------------
# Tiny checkpoints (tests, offline experiments)
# ---------------------------------------------------------------------------------------------------


def llama_layout_tokenizer(base_vocab_size: int = 32000) -> PreTrainedTokenizerBase:
    """A Llama-2-layout BPE tokenizer: <unk>/<s>/</s> = 0/1/2, byte tokens 3..258, "▁" at 29871,
    rare single characters in the top 256 ids (the action tokens), `<PAD>` = 32000 added on top.

    Its merges are learnt from the words our tasks use, so prompts tokenise into real sub-words.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    words = (
        "in what action should the robot take to put place move pick lift push the a an on onto into in top of "
        "green red blue yellow orange purple white black cube block box towel cloth plate dish bowl carrot spoon "
        "eggplant basket table yellow stack it and then out sink drawer open close cup"
    )
    corpus = [PROMPT_TEMPLATE.format(instruction=f"put the {a} {b} on the {c}")
              for a in words.split()[20:28] for b in ("cube", "block") for c in ("towel", "plate", "cloth")]
    corpus += [words] * 4
    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)  # no merges across words
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"],
                                                        show_progress=False))
    learnt = sorted(bpe.get_vocab().items(), key=lambda kv: kv[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"<0x{b:02X}>": 3 + b for b in range(256)}
    for piece, _ in learnt:
        if piece not in vocab and piece != "▁":
            vocab[piece] = len(vocab)
    filler = (chr(c) for c in range(0x4E00, 0x4E00 + base_vocab_size))  # CJK ideographs, as rare as Llama's
    while len(vocab) < base_vocab_size:
        if len(vocab) == ACTION_PREFIX_TOKEN_ID:
            vocab["▁"] = ACTION_PREFIX_TOKEN_ID
            continue
        piece = next(filler)
        if piece not in vocab:
            vocab[piece] = len(vocab)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
              for m in json.loads(bpe.to_str())["model"]["merges"]]
    tokenizer = LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True, add_eos_token=False,
                               legacy=False)
    tokenizer.add_special_tokens({"pad_token": "<PAD>"})
    assert tokenizer.pad_token_id == base_vocab_size and tokenizer.convert_ids_to_tokens(ACTION_PREFIX_TOKEN_ID) == "▁"
    return tokenizer


TINY_SIZES: dict[str, Any] = {
    "dino": {"embed_dim": 32, "depth": 3, "num_heads": 2},
    "siglip": {"embed_dim": 48, "depth": 3, "num_heads": 2, "mlp_ratio": 2.0},
    "llm": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 4},
}


def make_tiny_openvla(directory: str | Path, seed: int = 0, sizes: dict[str, Any] | None = None) -> Path:
    """Write a small random OpenVLA checkpoint in exactly the released layout.

    Same files (config.json with `norm_stats`, `model-0000i-of-0000n.safetensors` + index, tokenizer files),
    same tensor names (incl. `ls1.scale_factor` and SigLIP's unused `attn_pool.*`), same vocabulary
    layout (32000 + `<PAD>` padded to 32064 rows, action tokens at 31744..31999); only the widths and
    depths differ (`sizes`, default `TINY_SIZES`: ~10 MB). `norm_stats` holds a `bridge_orig` entry and
    our built-in tasks' `panda_tabletop`.
    """
    sizes = {**TINY_SIZES, **(sizes or {})}
    ids = OpenVLAConfig().timm_model_ids
    config = OpenVLAConfig(
        timm_model_kwargs=[dict(sizes["dino"]), dict(sizes["siglip"])],
        text_config={"model_type": "llama", "pad_token_id": 32000, "vocab_size": 32064, **sizes["llm"]},
        norm_stats={"bridge_orig": BRIDGE_NORM_STATS, BUILTIN_NORM_KEY: BUILTIN_NORM_STATS},
        extra={"arch_specifier": "no-align+fused-gelu-mlp", "image_resize_strategy": "resize-naive",
               "llm_backbone_id": "llama2-7b-pure", "vision_backbone_id": "dinosiglip-vit-so-224px",
               "hf_llm_id": "meta-llama/Llama-2-7b-hf", "llm_max_length": 2048, "pad_token_id": 32000,
               "output_projector_states": False, "timm_override_act_layers": [None, None]},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = OpenVLAForActionPrediction(config)
        # The released file also holds SigLIP's pooling head; write one so the layout is complete.
        pooled = timm.create_model(ids[1], pretrained=False, num_classes=0, img_size=224, **sizes["siglip"])
        extra = {f"vision_backbone.fused_featurizer.{k}": v.to(torch.bfloat16).contiguous()
                 for k, v in pooled.state_dict().items() if k.startswith("attn_pool.")}
    Path(directory).parent.mkdir(parents=True, exist_ok=True)
    # Three shards, like the released checkpoint, so the sharded-index path is what tests exercise.
    total = sum(p.numel() for p in model.parameters()) * 2
    return save_pretrained(model, llama_layout_tokenizer(), directory, max_shard_bytes=math.ceil(total / 3) + 1,
                           extra_tensors=extra)


def ensure_tiny_openvla(seed: int = 0) -> Path:
    """The checkpoint behind `--vla-path tiny`: made once under TINY_CACHE_DIR, then reused."""
    directory = TINY_CACHE_DIR / f"tiny-openvla-seed{seed}"
    if not (directory / "config.json").exists():
        print(f"[openvla_patch] writing a tiny random OpenVLA checkpoint to {directory} (delete it any time)")
        try:
            make_tiny_openvla(directory, seed=seed)
        except OSError:
            if not (directory / "config.json").exists():  # another rank may have written it meanwhile
                raise
    return directory


if __name__ == "__main__":  # the tiny generate demo: python openvla_patch.py
    torch.manual_seed(0)
    vla, processor = load_vla("tiny", dtype=torch.float32)
    frames = torch.randint(0, 256, (2, 224, 224, 3), dtype=torch.uint8)
    ids, mask, pixels = processor(frames, ["put the green cube on the towel", "put the red cube on the plate"])
    sample = vla.generate_actions(ids, mask, pixels)
    stats = action_stats(vla.config, BUILTIN_NORM_KEY)
    print("action tokens:", sample.tokens.tolist())
    print("log-probs:", sample.logprobs.sum(-1).tolist())
    print("actions:", tokens_to_actions(sample.tokens, vla.config, stats).numpy().round(3).tolist())
