"""Fidelity to the released OpenVLA stack: PIL-exact image resize, fp32 rotary frequencies under bf16,
tokenizer.json that tokenizers 0.19.1 reads, the released file layout (preprocessor config, remote code)
and no bitsandbytes noise without 4-bit."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TVF
from PIL import Image

import openvla_patch
from openvla_patch import (
    DINOV2_MEAN,
    DINOV2_STD,
    SIGLIP_MEAN,
    SIGLIP_STD,
    LoraSettings,
    llama_layout_tokenizer,
    load_vla,
    released_preprocessor_config,
    resize_like_released,
    save_pretrained,
)

REPO = Path(__file__).resolve().parents[1]

# --- 1. image resize -----------------------------------------------------------------------------------


def _test_images(h: int, w: int) -> np.ndarray:
    """(6, h, w, 3) uint8: two random images, a gradient, a 1-pixel and a 3-pixel checkerboard, hard edges."""
    rng = np.random.default_rng(h * 1000 + w)
    yy, xx = np.mgrid[0:h, 0:w]
    gradient = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), (xx + yy) * 255 // (h + w)], -1)
    fine = np.repeat(((xx + yy) % 2 * 255)[..., None], 3, -1)
    checker = np.repeat(((xx // 3 + yy // 3) % 2 * 255)[..., None], 3, -1)
    edges = np.where((xx > w // 2) ^ (yy > h // 3), 255, 0)[..., None] * np.array([1, 0, 1])
    return np.stack([*rng.integers(0, 256, (2, h, w, 3)), gradient, fine, checker, edges]).astype(np.uint8)


def _released_pixel_values(image: np.ndarray) -> torch.Tensor:
    """PrismaticImageProcessor.apply_transform with openvla-7b's preprocessor_config.json, verbatim."""
    cfg = released_preprocessor_config()
    pil = Image.fromarray(image)
    out = []
    steps = zip(cfg["tvf_resize_params"], cfg["tvf_crop_params"], cfg["tvf_normalize_params"], strict=True)
    for resize, crop, normalize in steps:
        x = TVF.resize(pil, **{**resize, "interpolation": TVF.InterpolationMode.BICUBIC})
        x = TVF.center_crop(x, **crop)
        out.append(TVF.normalize(TVF.to_tensor(x), **normalize))
    return torch.vstack(out)


# (height, width): SimplerEnv's Bridge camera and most webcams, a small camera, square, odd sizes,
# upscaling, and one side up while the other goes down (where PIL's pass order matters most)
SIZES = [(480, 640), (256, 320), (256, 256), (375, 500), (120, 160), (100, 100), (300, 100), (100, 300)]


@pytest.mark.parametrize("h,w", SIZES)
def test_resize_and_pixel_values_match_the_released_processor(tiny_fp32, h, w):
    _, processor = tiny_fp32
    images = _test_images(h, w)
    ours = resize_like_released(images, 224)
    for image, resized in zip(images, ours, strict=True):
        pil = np.asarray(Image.fromarray(image).resize((224, 224), Image.Resampling.BICUBIC))
        assert np.abs(resized.astype(int) - pil.astype(int)).max() <= 1
    pixel_values = processor.process_images(torch.from_numpy(images))  # (6, 6, 224, 224)
    expected = torch.stack([_released_pixel_values(image) for image in images])
    # one uint8 step is 1 / 255 / std in normalised units: the largest is DINOv2's, 1 / 255 / 0.2236
    assert (pixel_values - expected).abs().max() <= 1.001 / 255 / min(DINOV2_STD)


def test_224_inputs_are_not_resized(tiny_fp32, monkeypatch):
    _, processor = tiny_fp32
    images = _test_images(224, 224)
    monkeypatch.setattr(openvla_patch, "resize_like_released", lambda *a: pytest.fail("224x224 was resized"))
    pixel_values = processor.process_images(images)  # numpy input works as tensors do
    x = torch.from_numpy(images).permute(0, 3, 1, 2) / 255
    for first, mean, std in ((0, DINOV2_MEAN, DINOV2_STD), (3, SIGLIP_MEAN, SIGLIP_STD)):
        normalised = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
        assert torch.equal(pixel_values[:, first : first + 3], normalised)


# --- 2. rotary frequencies stay fp32 under bf16 ---------------------------------------------------------


def test_bf16_load_keeps_rotary_frequencies_fp32(tiny_dir):
    model, _ = load_vla(str(tiny_dir), dtype=torch.bfloat16)
    lm = model.causal_lm
    assert lm.model.embed_tokens.weight.dtype == torch.bfloat16
    config = lm.config
    dim = config.hidden_size // config.num_attention_heads
    # transformers' default RoPE init, in fp32 (what the released stack keeps under bf16)
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    expected = 1.0 / (config.rope_parameters["rope_theta"] ** exponents)
    for name in ("inv_freq", "original_inv_freq"):
        buffer = getattr(lm.model.rotary_emb, name)
        assert buffer.dtype == torch.float32 and torch.equal(buffer, expected), name


# --- 3. tokenizer.json readable by tokenizers 0.19.1 ----------------------------------------------------


def test_tokenizer_json_has_string_merges_and_same_ids(tiny_dir):
    from transformers import LlamaTokenizer

    merges = json.loads((tiny_dir / "tokenizer.json").read_text(encoding="utf-8"))["model"]["merges"]
    assert merges and all(isinstance(m, str) and len(m.split(" ")) == 2 for m in merges)
    written, in_memory = LlamaTokenizer.from_pretrained(str(tiny_dir)), llama_layout_tokenizer()
    for text in ["In: What action should the robot take to put the green cube on the towel?\nOut:",
                 "place the purple zebra block onto the folded kitchen cloth",
                 "中文 ünïcödé 🤖 ▁ x  y"]:
        assert written(text)["input_ids"] == in_memory(text)["input_ids"]


# --- 4. released layout: preprocessor config, remote code -----------------------------------------------

REMOTE_CODE = {"configuration_prismatic.py": "# config\n", "modeling_prismatic.py": "# model\r\nx = 1\n",
               "processing_prismatic.py": "# processor ünïcödé\n"}
AUTO_MAP = {"AutoConfig": "configuration_prismatic.OpenVLAConfig",
            "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction"}


def _base_with_remote_code(tiny_dir: Path, base: Path) -> Path:
    shutil.copytree(tiny_dir, base)
    for name, text in REMOTE_CODE.items():
        (base / name).write_bytes(text.encode())
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "auto_map": AUTO_MAP}, indent=2))
    return base


def test_remote_code_files_are_copied_unchanged(tiny_dir, tmp_path):
    base = _base_with_remote_code(tiny_dir, tmp_path / "base")
    model, processor = load_vla(str(base), dtype=torch.float32)
    out = save_pretrained(model, processor.tokenizer, tmp_path / "out", remote_code_from=base)
    for name in REMOTE_CODE:
        assert (out / name).read_bytes() == (base / name).read_bytes()
    assert json.loads((out / "config.json").read_text())["auto_map"] == AUTO_MAP
    assert json.loads((out / "preprocessor_config.json").read_text()) == released_preprocessor_config()
    load_vla(str(out))  # still our strict loader's format


def test_no_remote_code_invents_none(tiny_dir, tmp_path):
    model, processor = load_vla(str(tiny_dir), dtype=torch.float32)
    model.config.extra["auto_map"] = AUTO_MAP  # names modules that are nowhere: must not be written
    out = save_pretrained(model, processor.tokenizer, tmp_path / "out", remote_code_from=tiny_dir)
    assert not list(out.glob("*.py"))
    assert "auto_map" not in json.loads((out / "config.json").read_text())
    expected = {k: v for k, v in released_preprocessor_config().items() if k != "auto_map"}
    assert json.loads((out / "preprocessor_config.json").read_text()) == expected
    # every checkpoint we write has the processor config, the tiny one included
    assert json.loads((tiny_dir / "preprocessor_config.json").read_text()) == expected


# --- 6. no bitsandbytes without 4-bit -------------------------------------------------------------------


def _python_side_by_side(*runs: tuple[str, ...]) -> list[subprocess.CompletedProcess]:
    """`python -c code args` for each (code, *args), each in a fresh interpreter (what is imported is the point),
    all at the same time: each is mostly one core importing."""
    procs = [subprocess.Popen([sys.executable, "-c", *run], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for run in runs]
    try:
        outputs = [proc.communicate(timeout=300) for proc in procs]
        return [subprocess.CompletedProcess(proc.args, proc.returncode, *out)
                for proc, out in zip(procs, outputs, strict=True)]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


# bitsandbytes logs its kernels-community warning only on CPUs with AVX512-BF16: pretend this is one.
FAKE_AVX512_BF16 = """
import sys
class Pretend:
    def find_spec(self, name, path=None, target=None):
        if name == "bitsandbytes.backends.cpu.ops":
            sys.modules["bitsandbytes.functional"].has_avx512bf16 = lambda: True
sys.meta_path.insert(0, Pretend())
"""
WARNING = "Failed to load CPU gemm_4bit_forward"


def test_no_bitsandbytes_and_no_warning_without_4bit(tiny_dir):
    lora = f"openvla_patch.{LoraSettings(rank=2)!r}"
    done, control = _python_side_by_side(
        (FAKE_AVX512_BF16 + "import torch, openvla_patch\n"
         "openvla_patch.load_vla(sys.argv[1], dtype=torch.float32)\n"
         "print('bitsandbytes' in sys.modules, 'peft' in sys.modules)\n"
         # peft imports bitsandbytes whenever it is installed: with LoRA it is imported, quietly
         f"openvla_patch.load_vla(sys.argv[1], dtype=torch.float32, lora={lora})", str(tiny_dir)),
        (FAKE_AVX512_BF16 + "import bitsandbytes",),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]
    if WARNING in control.stderr:  # what this bitsandbytes prints when imported plainly on such a CPU
        assert WARNING not in done.stderr
