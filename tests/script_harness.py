"""What the tests of the three RL scripts share: running a script as a subprocess (in the foreground, or in
the background in its own process group) or, for runs that must fail before any env starts, in this process;
reading its tensorboard scalars, the exact-resume check, the bandit learning check of the update functions and
a fixed batch for their one-call tests."""

import contextlib
import io
import os
import random
import runpy
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import openvla_patch as ovp

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
PYTHON = (sys.executable,)


def torchrun(port: int) -> tuple[str, ...]:
    """A 2-rank torchrun launcher on `port` (distinct per test file: files may run side by side)."""
    return (sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port))


def command(script: str, args: list[str], launcher=PYTHON) -> list[str]:
    return [*launcher, str(ROOT / script), *args]


def run_script(script: str, args: list[str], cwd: Path, launcher=PYTHON, timeout: int = 600):
    return subprocess.run(command(script, args, launcher), cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def run_in_process(script: str, args: list[str], cwd: Path) -> tuple[int, str, str]:
    """`python script args` run in this process (`runpy`, as `__main__`: the script's own CLI block) from `cwd`:
    for bad-input checks that stop before any env starts, and for runs after a subprocess one has covered the CLI
    in a fresh interpreter; what a subprocess would add is ~10 s of imports. The global state that a run may set
    (cwd, argv, torch's deterministic mode, RNGs, threads and default dtype; the SIGTERM/SIGINT handlers) is
    restored. -> (exit code, stdout, stderr), Python-level output only."""
    stdout, stderr = io.StringIO(), io.StringIO()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch_rng, python_rng = torch.get_rng_state(), random.getstate()
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            mp.chdir(cwd)
            mp.setattr(sys, "argv", [script, *args])
            runpy.run_path(str(ROOT / script), run_name="__main__")
    except SystemExit as exit_info:
        code = exit_info.code if isinstance(exit_info.code, int) else 0 if exit_info.code is None else 1
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_rng_state(torch_rng)
        random.setstate(python_rng)
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
        for s, handler in handlers.items():
            signal.signal(s, handler)
    return code, stdout.getvalue(), stderr.getvalue()


def run_to_dir(script: str, args: list[str], out: Path) -> Path:
    """Run the script with `--output-dir out/runs`, require exit 0, return its (single) run directory."""
    proc = run_script(script, [*args, "--output-dir", str(out / "runs")], cwd=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (out / "runs").iterdir()
    return run_dir


@contextlib.contextmanager
def background(script: str, args: list[str], out: Path, launcher=PYTHON):
    """Start the script in its own process group with stdout/stderr in `out`; kill the group on exit if it
    still runs (ranks and env workers of a failed or interrupted session)."""
    with open(out / "stdout", "w") as stdout, open(out / "stderr", "w") as stderr:
        proc = subprocess.Popen(command(script, args, launcher), cwd=out, env=ENV, stdout=stdout, stderr=stderr,
                                start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def smoke_and_torchrun_fixtures(script: str, smoke: list[str], port: int, torchrun_args: Sequence[str] = ()):
    """Module fixtures `(torchrun_run, smoke_run, resume_run)`: a 2-rank run (1 iteration, `torchrun_args` added to
    `smoke`) started in the background, and the 2-iteration smoke run, which runs while it goes. Each is
    mostly one busy process waiting on env workers, so on 2 cores the pair takes little longer than one.
    `resume_run` resumes the smoke run's first checkpoint for its second iteration (see `assert_exact_resume`), in
    the background too: the module's first test of the smoke run requests it, so that it runs while the module's
    in-process tests do (a resumed run is mostly single-core start-up), and the tests that wait for the
    background runs come last in the module.
    Use: `torchrun_run, smoke_run, resume_run = smoke_and_torchrun_fixtures(SCRIPT, SMOKE, port)` in a test module."""

    @pytest.fixture(scope="module")
    def torchrun_run(tmp_path_factory):
        out = tmp_path_factory.mktemp("torchrun")
        args = [*smoke, *torchrun_args, "--num-iterations", "1", "--eval-every", "0", "--output-dir", str(out / "runs")]
        with background(script, args, out, torchrun(port)) as proc:
            yield proc, out

    @pytest.fixture(scope="module")
    def smoke_run(tmp_path_factory, torchrun_run):
        return run_to_dir(script, [*smoke, "--num-iterations", "2"], tmp_path_factory.mktemp("smoke"))

    @pytest.fixture(scope="module")
    def resume_run(tmp_path_factory, smoke_run):
        """A copy of the smoke run without its iteration-2 checkpoint, resumed from iteration 1 to 2 in the
        background -> (process, its directory, the copy). Meanwhile this process's torch runs on one thread: two
        OpenMP threads wait for each other at every op whenever another process holds a core (the PPO bandit
        check took 10x longer that way, 1.2x on one thread), and the results do not depend on it."""
        out = tmp_path_factory.mktemp("resume")
        copy = out / smoke_run.name
        shutil.copytree(smoke_run, copy)
        shutil.rmtree(copy / "checkpoints" / "iter_000002")
        args = [*smoke, "--num-iterations", "2", "--resume", str(copy / "checkpoints" / "iter_000001")]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with background(script, args, out) as proc:
                yield proc, out, copy
        finally:
            torch.set_num_threads(threads)

    return torchrun_run, smoke_run, resume_run


def assert_ranks_identical(proc: subprocess.Popen, out: Path) -> None:
    """A background 2-rank run (see `background`) ended well and its ranks held the same trainable weights."""
    returncode = proc.wait(timeout=600)
    assert returncode == 0, (out / "stderr").read_text()[-3000:]
    assert "trainable weights identical on 2 ranks" in (out / "stdout").read_text()


def assert_lora_trained(model) -> None:
    """The model carries LoRA weights and training moved them (LoRA B starts at zero)."""
    lora = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert lora and any(p.abs().sum() > 0 for p in lora.values())


def scalars(run_dir: Path) -> dict[str, list[float]]:
    acc = EventAccumulator(str(run_dir)).Reload()
    return {k: [e.value for e in acc.Scalars(k)] for k in acc.Tags()["scalars"]}


def _trainable(ckpt: Path, files: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {f"{f}:{k}": v for f in files for k, v in load_file(ckpt / f).items()}


def assert_exact_resume(resume_run, smoke_run: Path, files: tuple[str, ...] = ("adapter_model.safetensors",)) -> None:
    """`smoke_run` ran 2 iterations straight with a checkpoint after each; 1 iteration + resume + 1 more (`resume_run`
    of `smoke_and_torchrun_fixtures`) must give the same trainable weights bit for bit, and those must differ from
    iteration 1's."""
    proc, out, copy = resume_run
    returncode = proc.wait(timeout=600)
    assert returncode == 0, (out / "stderr").read_text()[-3000:]
    straight = _trainable(smoke_run / "checkpoints" / "iter_000002", files)
    resumed = _trainable(copy / "checkpoints" / "iter_000002", files)
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    first = _trainable(smoke_run / "checkpoints" / "iter_000001", files)
    assert any(not torch.equal(first[k], straight[k]) for k in first)  # the comparison is not vacuous


def bandit_learning(tiny_dir: Path, update, args, fill_batch, iterations: int = 8, batch_size: int = 32,
                    lr: float = 3e-4) -> tuple[float, float]:
    """The learning check of issue 12, through a script's own update function: a contextual bandit on the real
    tiny model (LoRA r16 / alpha 32 on the LM, lr 3e-4, as the learning experiment) with a SYNTHETIC reward,
    1 when the sampled x token lies in the upper half of the initial policy's x distribution. Each iteration
    samples `batch_size` actions for one image and instruction, `fill_batch(batch, rewards)` adds the keys the
    algorithm needs (its advantages), and `update(args, model, processor, optimizer, batch, dtype, 1)` runs.
    -> the probability of a rewarded x token before and after (exact, from the logits)."""
    torch.manual_seed(0)
    model, processor = ovp.load_vla(str(tiny_dir), dtype=torch.float32, lora=ovp.LoraSettings(rank=16, alpha=32),
                                    with_value_head=True)
    # A random init's action logits are nearly flat and stay so: their spread is sqrt(hidden size) x the head's
    # weight std, 0.16 at the tiny model's width 64 (~1.3 at Llama-2-7B's 4096), and LoRA on the decoder cannot
    # widen it (the final RMSNorm fixes the hidden state's norm; lm_head has no adapter). Scale the 256 action
    # rows to 7B's logit spread, so that the policy can become as peaked as a real one.
    with torch.no_grad():
        model.causal_lm.lm_head.weight[model._action_ids] *= 8
    lora = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("value_head.")]
    optimizer = torch.optim.Adam([{"params": lora, "lr": lr}, {"params": model.value_head.parameters(), "lr": 3e-3}],
                                 eps=1e-5)
    images = torch.randint(0, 256, (1, 224, 224, 3), dtype=torch.uint8).expand(batch_size, -1, -1, -1)
    input_ids, attention_mask, pixel_values = processor(images, ["put the green cube on the towel"] * batch_size)

    def x_probs() -> torch.Tensor:  # (256,) the policy's distribution of the first (x) token
        with torch.no_grad():
            logits = model.generate_actions(input_ids[:1], attention_mask[:1], pixel_values[:1], greedy=True).logits
        return logits[0, 0].softmax(-1)

    before = x_probs()
    threshold = int((before.cumsum(0) < 0.5).sum())  # columns above it carry about half the mass
    rewarded = torch.arange(256) > threshold
    for _ in range(iterations):
        model.eval()
        with torch.no_grad():
            sample = model.generate_actions(input_ids, attention_mask, pixel_values)
        rewards = rewarded[sample.tokens[:, 0] - model.config.action_token_ids.start].float()  # (B,)
        batch = {"obs": images, "input_ids": input_ids, "attention_mask": attention_mask, "actions": sample.tokens,
                 "logprobs": sample.logprobs.sum(-1), "values": sample.values,
                 "alive": torch.ones(batch_size, dtype=torch.bool)}
        fill_batch(batch, rewards)
        update(args, model, processor, optimizer, batch, torch.float32, 1)
    return before[rewarded].sum().item(), x_probs()[rewarded].sum().item()


def fixed_update_batch(tiny_dir: Path, advantages: Sequence[float]):
    """A batch for one call of an update function, its `advantages` given: the tiny model with a rank-4 LoRA and a
    value head (seeded), one sampled action for each of len(advantages) random images. The PPO keys `values` and
    `returns` (value + 1) are there too; the critic-free updates ignore them. -> (model, processor, batch)."""
    torch.manual_seed(0)
    model, processor = ovp.load_vla(str(tiny_dir), dtype=torch.float32, lora=ovp.LoraSettings(rank=4),
                                    with_value_head=True)
    n = len(advantages)
    images = torch.randint(0, 256, (n, 224, 224, 3), dtype=torch.uint8)
    ids, mask, px = processor(images, ["put the green cube on the towel"] * n)
    sample = model.generate_actions(ids, mask, px)
    batch = {"obs": images, "input_ids": ids, "attention_mask": mask, "actions": sample.tokens,
             "logprobs": sample.logprobs.sum(-1), "values": sample.values,
             "advantages": torch.tensor(advantages), "returns": sample.values + 1.0,
             "alive": torch.ones(n, dtype=torch.bool)}
    return model, processor, batch


def batch_logprobs(model, processor, batch) -> torch.Tensor:
    """(n,) the composite action log-probs of the batch's stored actions under the model now."""
    with torch.no_grad():
        px = processor.process_images(batch["obs"])
        return model.evaluate_actions(batch["input_ids"], batch["attention_mask"], px, batch["actions"]).logprobs.sum(-1)


def write_demos(path: Path, instructions=("put the green cube on the towel", "put the green cube on the plate"),
                variants=("train", "unseen_target"), steps: int = 3) -> torch.Tensor:
    """A demonstrations file in sft_openvla.py's format, one episode per instruction: random images, `steps` steps
    of one fixed action per episode (the tiny model's bin centres of distinct tokens, `panda_tabletop` stats).
    -> the token ids of each step's expert action (D, 7)."""
    model, _ = ovp.load_vla("tiny", dtype=torch.float32)
    stats = ovp.action_stats(model.config, ovp.BUILTIN_NORM_KEY)
    tokens = torch.tensor([[31900 + 10 * e + d for d in range(ovp.ACTION_DIM)] for e in range(len(instructions))])
    tokens = tokens.repeat_interleave(steps, 0)  # (D, 7)
    rng = np.random.default_rng(0)
    np.savez(path, images=rng.integers(0, 256, (len(tokens), 224, 224, 3), dtype=np.uint8),
             actions=ovp.tokens_to_actions(tokens, model.config, stats).numpy().astype(np.float32),
             episode_index=np.repeat(np.arange(len(instructions)), steps).astype(np.int32),
             instructions=np.array(instructions), variants=np.array(variants))
    return tokens
