"""openvla_patch.py speed paths (issue 13) against their references, on the CPU:
reused patch embeddings == recomputed vision; static-KV-cache decoding == DynamicCache decoding, and the
whole-call graph's code (decode="cuda_graph_all", run eagerly) == static-KV-cache decoding;
LoRA computing in bf16 over fp32 master weights, identically in rollout and update; compiled decoder
layers (the update) and compiled layer halves (the rollout's prefill and decode steps) == eager ones."""

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch._dynamo.utils import counters
from vla_inputs import INSTRUCTIONS, random_images

import openvla_patch as ovp
from openvla_patch import LoraSettings, OpenVLAError, StaticCacheDecoder, compile_decoder_layers, load_vla


def _lora_model(tiny_dir, dtype=torch.float32, **kwargs):
    """A LoRA model with a value head whose LoRA matters (peft starts lora_B at 0)."""
    model, processor = load_vla(str(tiny_dir), dtype=dtype, lora=LoraSettings(rank=4, alpha=8), with_value_head=True,
                                **kwargs)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval(), processor


# --- no recomputed vision in the update ---------------------------------------------------------------


def test_reused_patch_embeddings_equal_recomputed(tiny_dir):
    model, processor = _lora_model(tiny_dir)
    ids, mask, px = processor(random_images(3, seed=3), INSTRUCTIONS)
    assert model.generate_actions(ids, mask, px).patch_embeddings is None
    sample = model.generate_actions(ids, mask, px, return_patch_embeddings=True)
    assert sample.patch_embeddings.shape == (3, 256, model.causal_lm.config.hidden_size)
    recomputed = model.evaluate_actions(ids, mask, px, sample.tokens)
    reused = model.evaluate_actions(ids, mask, None, sample.tokens, patch_embeddings=sample.patch_embeddings)
    for name in ("logprobs", "entropy", "values"):
        assert torch.equal(getattr(reused, name), getattr(recomputed, name)), name
    first_ratio = (reused.logprobs - sample.logprobs).exp()
    assert torch.allclose(first_ratio, torch.ones_like(first_ratio), atol=1e-5)
    assert torch.allclose(reused.values, sample.values, atol=1e-5)
    (reused.logprobs.sum() + reused.values.sum()).backward()  # gradients reach LoRA through the reused path
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_A" in n)


def test_patch_embeddings_need_frozen_vision_and_exactly_one_image_input(tiny_dir, tiny_fp32):
    model, processor = tiny_fp32  # full fine-tuning: every parameter trainable
    ids, mask, px = processor(random_images(2), INSTRUCTIONS[:2])
    sample = model.generate_actions(ids, mask, px, return_patch_embeddings=True)
    with pytest.raises(OpenVLAError, match="pass pixel_values"):
        model.evaluate_actions(ids, mask, None, sample.tokens, patch_embeddings=sample.patch_embeddings)
    with torch.no_grad():  # no gradients, no training: reuse is exact
        ev = model.evaluate_actions(ids, mask, None, sample.tokens, patch_embeddings=sample.patch_embeddings)
    assert torch.allclose(ev.logprobs, sample.logprobs, atol=1e-5)
    for pixels, patches in ((px, sample.patch_embeddings), (None, None)):
        with pytest.raises(ValueError, match="exactly one"):
            model.evaluate_actions(ids, mask, pixels, sample.tokens, patch_embeddings=patches)


# --- static KV cache decoding (the CUDA graph's code, run eagerly) ---------------------------------------


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("greedy", [True, False])
def test_static_cache_decode_equals_dynamic_cache(tiny_dir, attn, greedy):
    model, processor = _lora_model(tiny_dir, attn_implementation=attn)
    ids, mask, px = processor(random_images(3, seed=4), INSTRUCTIONS)  # padded: three prompt lengths
    assert len(set(mask.sum(1).tolist())) == 3
    runs = {decode: model.generate_actions(ids, mask, px, temperature=1.3, greedy=greedy, decode=decode,
                                           generator=torch.Generator().manual_seed(5))
            for decode in ("dynamic", "static")}
    assert torch.equal(runs["static"].tokens, runs["dynamic"].tokens)
    assert torch.allclose(runs["static"].logprobs, runs["dynamic"].logprobs, atol=1e-6, rtol=0)
    assert torch.allclose(runs["static"].logits, runs["dynamic"].logits, atol=1e-5, rtol=0)
    assert torch.equal(runs["static"].values, runs["dynamic"].values)  # the same prefill
    assert model.generate_actions(ids, mask, px).tokens.shape == (3, 7)  # default on the CPU: dynamic


def test_static_decoder_reused_across_prompt_lengths(tiny_fp32, monkeypatch):
    """A captured graph is reused for later calls of another prompt length: no state may leak between them."""
    model, processor = tiny_fp32
    batches = [processor(random_images(2, seed=6), INSTRUCTIONS[1:]), processor(random_images(2, seed=7), INSTRUCTIONS[:2])]
    reference = [model.generate_actions(*b, greedy=True, decode="dynamic") for b in batches]
    assert batches[0][0].shape[1] != batches[1][0].shape[1]
    shared = StaticCacheDecoder(model, batch=2, length=1 + 256 + batches[0][0].shape[1] + 16, cuda_graph=False)
    monkeypatch.setattr(model, "_decoder", lambda *args: shared)
    for batch, ref in zip(batches * 2, reference * 2, strict=True):
        sample = model.generate_actions(*batch, greedy=True)
        assert torch.equal(sample.tokens, ref.tokens)
        assert torch.allclose(sample.logprobs, ref.logprobs, atol=1e-6, rtol=0)


def test_decode_modes_are_checked(tiny_fp32):
    model, processor = tiny_fp32
    ids, mask, px = processor(random_images(1), INSTRUCTIONS[:1])
    with pytest.raises(ValueError, match="decode must be one of"):
        model.generate_actions(ids, mask, px, decode="graph")
    with pytest.raises(OpenVLAError, match="CUDA device"):
        model.generate_actions(ids, mask, px, decode="cuda_graph")
    for decode in ("cuda_graph_prefill", "cuda_graph_all"):
        with pytest.raises(OpenVLAError, match=f'"{decode}" needs the model on a CUDA device'):
            model.generate_actions(ids, mask, px, decode=decode)


def test_default_decode(tiny_fp32, monkeypatch):
    """decode=None: eager on the CPU; on a GPU the whole call as one graph for a small model, the decode steps' graph
    alone for a large one or after compile_decoder_layers, eager again once a capture failed."""
    model, _ = tiny_fp32
    assert model._default_decode() == "dynamic"
    on_gpu = SimpleNamespace(weight=SimpleNamespace(device=torch.device("cuda")))
    monkeypatch.setitem(vars(model.causal_lm), "get_input_embeddings", lambda: on_gpu)
    assert model._default_decode() == "cuda_graph_all"
    monkeypatch.setattr(model, "compiled_halves", (None, None))
    assert model._default_decode() == "cuda_graph"
    monkeypatch.setattr(model, "compiled_halves", None)
    monkeypatch.setattr(ovp, "PREFILL_GRAPH_MAX_PARAMETERS", 0)
    assert model._default_decode() == "cuda_graph"
    monkeypatch.setattr(model, "cuda_graph_error", "RuntimeError: capture failed")
    assert model._default_decode() == "dynamic"


@pytest.mark.parametrize("greedy", [True, False])
def test_whole_call_equals_static_decode(tiny_dir, greedy):
    """What decode="cuda_graph_all" captures (`StaticCacheDecoder.whole_call`), run eagerly on a padded batch in fp32:
    exactly the "static" path's tokens, log-probs, logits, values and patch embeddings; sampling from the default
    generator, it draws the same tokens from the same seed."""
    model, processor = _lora_model(tiny_dir)
    ids, mask, px = processor(random_images(3, seed=9), INSTRUCTIONS)
    torch.manual_seed(1)
    ref = model.generate_actions(ids, mask, px, temperature=1.3, greedy=greedy, decode="static",
                                 return_patch_embeddings=True)
    decoder = model._decoder(3, ids.shape[1] + model.vision_backbone.num_patches, "static")
    decoder.graph = SimpleNamespace(replay=lambda: pytest.fail("a graph cannot replay the decode graph it captures"))
    torch.manual_seed(1)
    with torch.no_grad():
        outputs = decoder.whole_call(ids, mask, px, temperature=1.3, greedy=greedy)
    for name, out in zip(("tokens", "logprobs", "values", "logits", "patch_embeddings"), outputs, strict=True):
        assert torch.equal(out, getattr(ref, name)), name


def _eager_capture(function):
    """`openvla_patch._capture` without a GPU: the "graph" runs `function` again and writes its results into the
    first run's outputs, as a replay overwrites the graph's own."""
    outputs = function()

    def replay():
        for out, new in zip(outputs, function(), strict=True):
            if out is not None:
                out.copy_(new)

    return SimpleNamespace(replay=replay), outputs


def test_whole_call_graph_replays_and_falls_back(tiny_dir, monkeypatch):
    """decode="cuda_graph_all" on the CPU with `_capture` replaced by eager runs: one graph per prompt length (and
    greedy, temperature), each call's inputs copied into its static ones, greedy results those of "static"; sampling
    with a caller's generator, or after a failed capture (warned once, `full_graph_error` set, `cuda_graph_error`
    not), it runs "cuda_graph_prefill" instead."""
    model, processor = _lora_model(tiny_dir)
    batches = [processor(random_images(2, seed=10), INSTRUCTIONS[1:]), processor(random_images(2, seed=11), INSTRUCTIONS[:2]),
               processor(random_images(2, seed=12), INSTRUCTIONS[1:])]  # the first prompt length again, other images
    refs = [model.generate_actions(*b, greedy=True, decode="static", return_patch_embeddings=True) for b in batches]
    shared = StaticCacheDecoder(model, batch=2, length=1 + 256 + batches[0][0].shape[1] + 16, cuda_graph=False)
    monkeypatch.setattr(model, "_decoder", lambda *args: shared)
    monkeypatch.setattr(ovp, "_capture", _eager_capture)
    for batch, ref in zip(batches * 2, refs * 2, strict=True):
        sample = model.generate_actions(*batch, greedy=True, decode="cuda_graph_all", return_patch_embeddings=True)
        assert torch.equal(sample.tokens, ref.tokens)
        assert torch.allclose(sample.logprobs, ref.logprobs, atol=1e-6, rtol=0)
        assert torch.equal(sample.values, ref.values) and torch.equal(sample.patch_embeddings, ref.patch_embeddings)
    assert set(shared.full_graphs) == {(b[0].shape[1], True, 1.0) for b in batches} and not shared.prefill_graphs

    seeded = [model.generate_actions(*batches[0], decode=decode, generator=torch.Generator().manual_seed(0))
              for decode in ("static", "cuda_graph_all")]
    assert torch.equal(seeded[1].tokens, seeded[0].tokens) and list(shared.prefill_graphs) == [batches[0][0].shape[1]]

    captures = []

    def failing_once(function):
        captures.append(function)
        if len(captures) == 1:
            raise RuntimeError("operation not permitted when stream is capturing")
        return _eager_capture(function)

    monkeypatch.setattr(ovp, "_capture", failing_once)
    shared.full_graphs.clear()
    shared.prefill_graphs.clear()
    with pytest.warns(UserWarning, match="generate_actions as one CUDA graph failed"):
        sample = model.generate_actions(*batches[1], greedy=True, decode="cuda_graph_all")
    assert model.full_graph_error == "RuntimeError: operation not permitted when stream is capturing"
    assert model.cuda_graph_error is None and not shared.full_graphs and len(shared.prefill_graphs) == 1
    assert torch.equal(sample.tokens, refs[1].tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once; no capture tried again
        assert torch.equal(model.generate_actions(*batches[1], greedy=True, decode="cuda_graph_all").tokens, refs[1].tokens)
    assert len(captures) == 2


# --- LoRA at base speed --------------------------------------------------------------------------------


def test_lora_computes_in_bf16_over_fp32_weights_and_first_ratio_is_one(tiny_dir):
    model, processor = _lora_model(tiny_dir, dtype=torch.bfloat16)
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert lora and all(p.dtype == torch.float32 for p in lora.values())  # the optimizer's master weights
    seen = []
    layer = model.causal_lm.model.layers[0].self_attn.q_proj
    handle = layer.lora_A["default"].register_forward_hook(lambda m, args, out: seen.append((args[0].dtype, out.dtype)))
    ids, mask, px = processor(random_images(3, seed=8), INSTRUCTIONS, dtype=torch.bfloat16)
    sample = model.generate_actions(ids, mask, px, return_patch_embeddings=True, generator=torch.Generator().manual_seed(0))
    model.train()
    ev = model.evaluate_actions(ids, mask, None, sample.tokens, patch_embeddings=sample.patch_embeddings)
    handle.remove()
    assert seen and set(seen) == {(torch.bfloat16, torch.bfloat16)}  # no fp32 activations in the LoRA path
    first_ratio = (ev.logprobs.float() - sample.logprobs).exp()
    # bf16: the cached rollout and the teacher-forced pass round differently (up to ~2e-3 on the CPU over
    # seeds, with or without autocast); fp32 exactness is tested above, the GPU figure is in bench/.
    assert torch.allclose(first_ratio, torch.ones_like(first_ratio), atol=1e-2)
    ev.logprobs.sum().backward()
    grads = [p.grad for p in lora.values() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 for g in grads) and any(g.abs().sum() > 0 for g in grads)


# --- compiled decoder layers (--compile) -----------------------------------------------------------------


needs_inductor = pytest.mark.skipif(
    shutil.which("g++") is None,
    reason="torch.compile's CPU backend (inductor) builds its kernels with g++, which is not installed")


@needs_inductor
@pytest.mark.parametrize("checkpointing", [False, True])
def test_compiled_decoder_layers_equal_eager(tiny_dir, checkpointing):
    """After compile_decoder_layers the rollout (its prefill and decode steps through the compiled layer halves)
    gives eager's tokens, log-probs and values, and the update's teacher-forced pass through the compiled layers
    eager's log-probs, entropies, values and LoRA gradients (fp32): the first ratio of a compiled rollout under a
    compiled update stays 1."""
    models = {}
    for name in ("eager", "compiled"):
        torch.manual_seed(0)  # the same LoRA init in both
        models[name] = _lora_model(tiny_dir, gradient_checkpointing=checkpointing)[0]
    _, processor = _lora_model(tiny_dir)
    assert compile_decoder_layers(models["compiled"]) == models["compiled"].causal_lm.config.num_hidden_layers
    ids, mask, px = processor(random_images(3, seed=9), INSTRUCTIONS)  # padded: three prompt lengths
    samples = {name: model.generate_actions(ids, mask, px, return_patch_embeddings=True,
                                            generator=torch.Generator().manual_seed(1))
               for name, model in models.items()}
    assert torch.equal(samples["compiled"].tokens, samples["eager"].tokens)
    assert torch.equal(samples["compiled"].patch_embeddings, samples["eager"].patch_embeddings)  # vision: eager
    for field in ("logprobs", "values"):
        assert torch.allclose(getattr(samples["compiled"], field), getattr(samples["eager"], field), atol=1e-5,
                              rtol=0), field
    graphs = counters["stats"]["unique_graphs"]
    evals, grads = {}, {}
    for name, model in models.items():
        model.train()
        sample = samples[name]
        for micro in (slice(0, 3), slice(0, 2)):  # two batch sizes: one graph with symbolic sizes (dynamic=True)
            ev = model.evaluate_actions(ids[micro], mask[micro], None, sample.tokens[micro],
                                        patch_embeddings=sample.patch_embeddings[micro])
            (ev.logprobs.sum() + ev.entropy.sum() + ev.values.sum()).backward()
        evals[name] = ev
        grads[name] = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert counters["stats"]["unique_graphs"] > graphs  # the update did run compiled
    for field in ("logprobs", "entropy", "values"):
        assert torch.allclose(getattr(evals["compiled"], field), getattr(evals["eager"], field), atol=1e-5, rtol=0), field
    first_ratio = (evals["compiled"].logprobs.sum(-1) - samples["compiled"].logprobs[:2].sum(-1)).exp()
    assert torch.allclose(first_ratio, torch.ones_like(first_ratio), atol=1e-5, rtol=0)
    assert grads["compiled"].keys() == grads["eager"].keys() and any("lora_A" in n for n in grads["eager"])
    for n, g in grads["eager"].items():
        assert torch.allclose(grads["compiled"][n], g, atol=1e-5, rtol=1e-4), n


def test_layer_halves_are_the_decoder_layer(tiny_dir):
    """The cached passes' regrouping of a decoder layer (the halves run uncompiled around the cache write and
    attention) computes exactly transformers' layers, prefill and decode steps, with both decoders' caches and masks."""
    model, processor = _lora_model(tiny_dir)
    ids, mask, px = processor(random_images(3, seed=10), INSTRUCTIONS)
    for decode in ("dynamic", "static"):
        model.compiled_halves = None
        reference = model.generate_actions(ids, mask, px, decode=decode, generator=torch.Generator().manual_seed(2))
        model.compiled_halves = (ovp._layer_before_cache, ovp._layer_after_attention)
        sample = model.generate_actions(ids, mask, px, decode=decode, generator=torch.Generator().manual_seed(2))
        for field in ("tokens", "logprobs", "values", "logits"):
            assert torch.equal(getattr(sample, field), getattr(reference, field)), (decode, field)


@pytest.fixture(scope="module")
def tiny10_dir(tmp_path_factory):
    """A tiny checkpoint with 10 decoder layers: more than torch.compile's 8 recompiles per function."""
    return ovp.make_tiny_openvla(tmp_path_factory.mktemp("ckpt") / "tiny-openvla-10",
                                 sizes={"llm": {**ovp.TINY_SIZES["llm"], "num_hidden_layers": 10}})


@needs_inductor
def test_compiled_cached_passes_few_graphs_for_all_layers(tiny10_dir):
    """The rollout's compiled prefill and decode steps: per layer half one graph for the prompt and one for the decode
    steps' single token, whatever the depth, for both decoders (2-D or 4-D masks), a new batch size and prompt length;
    tokens, log-probs and values as eager (fp32, padded batch)."""
    models = []
    for _ in range(2):
        torch.manual_seed(0)  # the same LoRA init in both
        models.append(_lora_model(tiny10_dir))
    (eager, processor), (compiled, _) = models
    compile_decoder_layers(compiled)
    torch._dynamo.reset()  # the halves are shared by every model of the process: count from zero
    graphs = counters["stats"]["unique_graphs"]
    batches = [processor(random_images(3, seed=11), INSTRUCTIONS), processor(random_images(2, seed=12), INSTRUCTIONS[:2])]
    for (ids, mask, px), decode in [(batches[0], "dynamic"), (batches[0], "static"), (batches[1], "static")]:
        runs = [model.generate_actions(ids, mask, px, decode=decode, generator=torch.Generator().manual_seed(3))
                for model in (eager, compiled)]
        assert torch.equal(runs[1].tokens, runs[0].tokens), decode
        for field in ("logprobs", "values", "logits"):
            assert torch.allclose(getattr(runs[1], field), getattr(runs[0], field), atol=1e-5, rtol=0), (decode, field)
    assert counters["stats"]["unique_graphs"] - graphs == 4  # before the cache, after the attention: T > 1 and T = 1


# --- bench/throughput.py smoke run -----------------------------------------------------------------------


def run_throughput(tmp_path, *args: str) -> dict:
    """bench/throughput.py --tiny with `args` (a subprocess, on the CPU) -> its JSON."""
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "throughput.json"
    subprocess.run([sys.executable, str(root / "bench" / "throughput.py"), "--tiny", "--repeats", "1", "--out", str(out),
                    *args], check=True, cwd=root, capture_output=True)
    return json.loads(out.read_text())


def test_throughput_bench_gemm_rows(tmp_path):
    """--sections gemm: the LM's linears at a rollout step's two shapes, B x tokens rows (prefill) and B rows (a
    decode step), summed over the layers against the floor of their FLOPs and bytes."""
    rows = run_throughput(tmp_path, "--sections", "gemm", "--batch-sizes", "2")["gemm"]
    assert [(r["phase"], r["rows"]) for r in rows] == [("prefill", 2 * rows[0]["tokens"]), ("decode_step", 2)]
    for row in rows:
        assert set(row["ms_per_layer"]) == {"q", "k", "v", "o", "gate", "up", "down"} == set(row["lora_ms_per_layer"])
        assert row["linears_s"] == pytest.approx(row["layers"] * sum(row["ms_per_layer"].values()) / 1e3)
        assert row["linears_over_floor"] == pytest.approx(row["linears_s"] / row["floor_s"]) and row["lora_s"] > 0
    # the prefill's rows make it compute-bound: its floor grows with the rows, a decode step's with the weights
    assert rows[0]["floor_s"] > rows[1]["floor_s"] * 10


@needs_inductor
def test_throughput_bench_tiny_rollout_rows(tmp_path):
    """The rollout section, eager and (--rollout-compile) with the prefill and decode steps through the compiled layer
    halves; --rollout-decodes adds a decode mode's time and greedy tokens to each eager row."""
    rows = run_throughput(tmp_path, "--sections", "rollout", "--quant", "bf16", "--lora", "on", "--batch-sizes", "2",
                          "--hf-loop-max-batch", "0", "--rollout-compile", "--rollout-decodes", "static")["rollout"]
    assert [row["compile"] for row in rows] == [False, True]
    for row in rows:
        assert {"quant": "bf16", "batch": 2, "lora": True}.items() <= row.items() and "error" not in row
        assert row["ours_over_floor"] == row["ours_s"] / row["floor_s"] > 0
        assert row["prefill_s"] > 0 and row["prefill_cached_s"] > 0
    eager, compiled = rows
    assert eager["graph_exact"] and eager["prefill_lm_peft_default_s"] > 0  # on the CPU: static vs static
    # --rollout-decodes static: timed against the floor, greedy tokens as the default's (dynamic on the CPU)
    assert eager["static_over_floor"] == eager["static_s"] / eager["floor_s"] > 0
    assert eager["static_greedy_vs_default_tokens_equal"] and eager["static_errors"]["full_graph_error"] is None
    assert compiled["compiled_within_1e-3_of_eager"] and compiled["prefill_cached_eager_s"] > 0
    assert compiled["decode_step_ms_static"] > 0 and compiled["decode_step_ms_static_eager_layers"] > 0
    assert compiled["first_ratio_max_dev"] < 1e-2  # bf16, the cached rollout vs the teacher-forced update


def test_rollout_floor_counts_weights_and_kv_cache_of_each_decode_step(tiny_fp32):
    """bench/throughput.py's rollout floor: prefill FLOPs at the matmul rate, then 6 decode steps, each reading the LM's
    linear weights (bf16) and the K and V of every earlier position of every row and layer."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import throughput

    model, _ = tiny_fp32
    cfg = model.causal_lm.config
    ids = torch.ones(3, 20, dtype=torch.long)
    ceilings = {"matmul_tflops": 1.0, "bandwidth_tbs": 1.0}
    floor, prefill_floor, tokens = throughput.rollout_floors(model, ids, "bf16", ceilings)
    assert tokens == 1 + 256 + 20
    weights = sum(m.weight.numel() for m in model.causal_lm.model.layers.modules() if isinstance(m, torch.nn.Linear))
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    kv = sum(cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * head_dim * 3 * (tokens + i) for i in range(6))
    assert floor - prefill_floor == pytest.approx((6 * weights + kv) * 2 / 1e12, rel=1e-9)


@pytest.mark.parametrize("compiled", [False, True])
def test_throughput_bench_tiny_update_profile(tmp_path, compiled):
    """bench/throughput.py --sections profile: one update micro-batch under torch.profiler; its busy time is the sum
    of the listed kinds, no more than the wall time (CPU: operators' self time), and the top entries are sorted.
    With --profile-compile the decoder layers run as compiled graphs."""
    profile = run_throughput(tmp_path, "--sections", "profile", "--profile-micro-batch", "2",
                             "--profile-compile" if compiled else "--no-profile-compile")["profile"]
    assert profile["micro_batch"] == 2 and 0 < profile["busy_s"] <= profile["wall_s"] * 1.05
    assert sum(profile["busy_s_by_kind"].values()) == pytest.approx(profile["busy_s"])
    assert profile["busy_s_by_kind"]["matmul"] > 0  # the LM's and LoRA's aten::mm
    shares = [row["self_s"] for row in profile["top"]]
    assert shares == sorted(shares, reverse=True) and len(shares) == 20
    assert profile["compiled_layers"] is compiled
    assert any("Compiled" in row["name"] for row in profile["top"]) is compiled


def test_throughput_bench_tiny_rollout_profile(tmp_path):
    """bench/throughput.py --sections tiny_rollout: the tiny model's rollout step, its parts timed (the towers a part
    of the whole step) and one step profiled (on the CPU: no kernels; the CPU operators sorted by their time).
    tiny_loop: the rollout loop on worker envs, its calls' times adding up to the step's wall time."""
    result = run_throughput(tmp_path, "--sections", "tiny_rollout", "tiny_loop", "--tiny-ppo-envs", "2",
                            "--tiny-ppo-env-parts", "2", "--tiny-loop-steps", "3")
    (loop,) = result["tiny_loop"]
    assert loop["envs"] == 2 and loop["env_parts"] == 2 and loop["step_wait_ms"] > 0 and loop["generate_actions_ms"] > 0
    calls = sum(v for k, v in loop.items() if k.endswith("_ms") and k != "step_ms")
    assert calls == pytest.approx(loop["step_ms"], rel=1e-6)  # every moment of the step is some call's
    assert loop["env_steps_per_s"] == pytest.approx(1e3 * loop["envs"] / loop["step_ms"])
    row = result["tiny_rollout"]
    assert row["envs"] == 2 and 0 < row["embed_images_s"] < row["generate_actions_s"] and row["process_images_s"] > 0
    assert row["profiled_wall_s"] > 0 and row["kernel_launches"] == 0 and row["gpu_busy_s"] == 0
    times = [op["self_cpu_s"] for op in row["top_cpu_ops"]]
    assert times == sorted(times, reverse=True) and len(times) == 20
