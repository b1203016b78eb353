"""bench/plot_curves.py: reads the success scalars the RL scripts log and writes the curves it plotted;
bench/learning_table.py: eval results -> counts, Fisher p against the prior; bench/failure_modes.py: eval results ->
failure-mode counts; bench/demo_likelihood.py: the policy's NLL of demonstrations per variant."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.tensorboard import SummaryWriter

ROOT = Path(__file__).resolve().parents[1]


def _run_with_success(path: Path, values: list[float]) -> Path:
    with SummaryWriter(str(path)) as writer:
        for i, v in enumerate(values):
            writer.add_scalar("charts/success_once", v, (i + 1) * 100)
    return path


def test_plot_curves_labels_and_numbers(tmp_path):
    a = _run_with_success(tmp_path / "a", [0.0, 0.5, 1.0, 0.5])
    b = _run_with_success(tmp_path / "b", [0.25, 0.25])
    out = tmp_path / "curves.png"
    cmd = [sys.executable, str(ROOT / "bench/plot_curves.py"), "--runs", str(a), str(b),
           "--labels", "PPO", "GRPO", "--smooth", "2", "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    assert out.stat().st_size > 0
    curves = json.loads(out.with_suffix(".json").read_text())
    assert curves["PPO: charts/success_once"] == [[100, 0.0], [200, 0.5], [300, 1.0], [400, 0.5]]
    assert curves["GRPO: charts/success_once"] == [[100, 0.25], [200, 0.25]]
    # --keys: other scalars (the update's diagnostics); a run that lacks one is skipped for it
    with SummaryWriter(str(a)) as writer:
        writer.add_scalar("losses/approx_kl", 0.02, 100)
    subprocess.run(cmd + ["--keys", "losses/approx_kl"], check=True, capture_output=True)
    kl = json.loads(out.with_suffix(".json").read_text())
    assert list(kl) == ["PPO: losses/approx_kl"] and kl["PPO: losses/approx_kl"][0] == [100, pytest.approx(0.02)]


def test_plot_curves_pairs_runs_step_by_step(tmp_path):
    """--paired-from: each run against the first over the steps after it that both logged."""
    a = _run_with_success(tmp_path / "a", [0.9, 0.5, 0.5, 0.75, 0.25])
    b = _run_with_success(tmp_path / "b", [0.0, 0.75, 0.5, 1.0])  # no step 500: left out of the pairing
    out = tmp_path / "p.png"
    done = subprocess.run([sys.executable, str(ROOT / "bench/plot_curves.py"), "--runs", str(a), str(b), "--labels",
                           "control", "arm", "--paired-from", "100", "--out", str(out)],
                          check=True, capture_output=True, text=True)
    d = json.loads(out.with_suffix(".json").read_text())["paired"]["arm - control: charts/success_once"]
    # steps 200-400: control 0.5, 0.5, 0.75; arm 0.75, 0.5, 1.0; differences 0.25, 0, 0.25
    assert d["iterations"] == 3 and d["from_step"] == 100
    assert d["mean_first"] == pytest.approx(1.75 / 3) and d["mean"] == pytest.approx(2.25 / 3)
    assert d["difference"] == pytest.approx(0.5 / 3)
    assert d["standard_error"] == pytest.approx(torch.tensor([0.25, 0.0, 0.25]).std().item() / 3**0.5)
    assert "arm - control: charts/success_once: 0.7500 vs 0.5833 over 3 iterations" in done.stdout


def test_plot_curves_rejects_a_label_count_mismatch(tmp_path):
    a = _run_with_success(tmp_path / "a", [0.0, 1.0])
    cmd = [sys.executable, str(ROOT / "bench/plot_curves.py"), "--runs", str(a), "--labels", "PPO", "GRPO",
           "--out", str(tmp_path / "c.png")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode != 0
    assert "give one per run" in done.stderr
    assert not (tmp_path / "c.png").exists()


def _eval_results(directory: Path, cells: dict, temperature: float = 0.0) -> Path:
    """An eval_generalization.py output directory as it writes one: `runs/<slug>/<variant>.json` per (checkpoint,
    variant), with the per-episode records, and results.json. cells = {(checkpoint, variant): [(success_once,
    grasped_once, wrong_receptacle_at_end) of each episode]}."""
    names = list(dict.fromkeys(c for c, _ in cells))
    decoding = f"sampled (T={temperature:g})" if temperature else "greedy"
    settings = {"episodes": len(next(iter(cells.values()))), "seed": 10**7, "temperature": temperature,
                "decoding": decoding, "max_episode_steps": 80}
    checkpoints = [{"name": c, "path": c, "slug": f"{Path(c).name}-{i:06x}", "kind": "base",
                    "unnorm_key": "sft_tabletop", "base": None} for i, c in enumerate(names)]
    rows = []
    for (name, variant), episodes in cells.items():
        once, grasped, wrong = ([bool(e[k]) for e in episodes] for k in range(3))
        ckpt, n = checkpoints[names.index(name)], len(episodes)
        file = directory / "runs" / ckpt["slug"] / f"{variant}.json"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps({"settings": settings, "checkpoint": ckpt, "variant": variant,
                                    "success_once_per_episode": once, "success_at_end_per_episode": once,
                                    "episodic_return": 0.0, "grasped_once_per_episode": grasped,
                                    "wrong_receptacle_at_end_per_episode": wrong}))
        rows.append({"checkpoint": name, "variant": variant, "category": "train", "n": n,
                     "success_once": sum(once) / n, "success_at_end": sum(once) / n, "success_once_ci": [0.0, 1.0],
                     "success_at_end_ci": [0.0, 1.0], "episodic_return": 0.0, "grasped_once": sum(grasped) / n,
                     "wrong_receptacle_at_end": sum(wrong) / n, "diff_success_once": None})
    (directory / "results.json").write_text(json.dumps({
        "settings": {**settings, "variants": list(dict.fromkeys(v for _, v in cells))},
        "checkpoints": checkpoints, "results": rows}, indent=2))
    return directory


def _episodes(successes: int, n: int) -> list[tuple[int, int, int]]:
    """`_eval_results` episodes with `successes` solved (cube held) of `n`, the others never held."""
    return [(1, 1, 0)] * successes + [(0, 0, 0)] * (n - successes)


def _run_side_by_side(*commands: list[str]) -> None:
    """Run independent commands at the same time; each must exit 0 (as `subprocess.run(check=True)`)."""
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in commands]
    try:
        for proc in procs:
            _, stderr = proc.communicate(timeout=300)
            assert proc.returncode == 0, stderr.decode()[-3000:]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_learning_table_counts_and_fisher_p(tmp_path):
    ckpts = ["runs/learning/prior", "runs/learning/ppo/train__ppo__1__7/checkpoints/iter_000120"]
    key = _eval_results(tmp_path / "key", {(ckpts[0], "train"): _episodes(70, 200), (ckpts[1], "train"): _episodes(170, 200),
                                           (ckpts[0], "red_cube"): _episodes(50, 200),
                                           (ckpts[1], "red_cube"): _episodes(52, 200)})
    other = _eval_results(tmp_path / "other", {(ckpts[0], "lighting"): _episodes(0, 100),
                                               (ckpts[1], "lighting"): _episodes(3, 100)})
    # three independent runs (own --out each), side by side: each is mostly one core importing
    sampled = _eval_results(tmp_path / "sampled", {(ckpts[0], "train"): _episodes(55, 200),
                                                   (ckpts[1], "train"): _episodes(50, 200)}, temperature=1.0)
    out, labelled, with_sampled = (tmp_path / f"{name}.json" for name in ("learning", "labelled", "with_sampled"))
    cmd = [sys.executable, str(ROOT / "bench/learning_table.py"), "--evals", str(key), str(other)]
    _run_side_by_side(
        [*cmd, "--out", str(out)],
        [*cmd, "--out", str(labelled), "--labels", f"{ckpts[1]}=ppo_it120"],
        [*cmd, str(sampled), "--out", str(with_sampled), "--labels", f"{ckpts[1]}=ppo_it120"],
    )
    table = json.loads(out.read_text())
    assert table["variants"]["train"] == {"prior": [70, 200], "ppo": [170, 200]}
    assert table["variants"]["lighting"] == {"prior": [0, 100], "ppo": [3, 100]}
    assert table["p_vs_prior"]["train"]["ppo"] < 1e-20  # 0.35 -> 0.85 on 200 episodes each
    assert table["p_vs_prior"]["red_cube"]["ppo"] > 0.5  # 50 vs 52 of 200: no evidence
    assert "170/200 = 0.85" in out.with_suffix(".md").read_text()
    # --labels names checkpoints explicitly (two checkpoints of one run would otherwise share "ppo")
    assert json.loads(labelled.read_text())["variants"]["train"] == {"prior": [70, 200], "ppo_it120": [170, 200]}
    # a sampled evaluation (--temperature 1) is another quantity: its own labels, tested against the sampled prior
    table = json.loads(with_sampled.read_text())
    assert table["variants"]["train"] == {"prior": [70, 200], "ppo_it120": [170, 200],
                                          "prior@T1": [55, 200], "ppo_it120@T1": [50, 200]}
    assert table["p_vs_prior"]["train"]["ppo_it120@T1"] > 0.5  # 55 vs 50 of 200, not 70 vs 50
    assert "prior@T1" not in table["p_vs_prior"]["train"]


def test_failure_modes_counts_cells_and_labels(tmp_path, capsys):
    """bench/failure_modes.py on two evaluations (greedy: prior and PPO; sampled at T=1: the PPO checkpoint alone,
    as an arm evaluated in its own directory). The per-episode records are synthetic: this tests the counting."""
    sys.path.insert(0, str(ROOT / "bench"))
    from failure_modes import Args, main

    prior, ppo = "runs/learning/prior", "runs/learning/ppo/train__ppo__1__7/checkpoints/iter_000120"
    solved, held, wrong, never, pushed = (1, 1, 0), (0, 1, 0), (0, 1, 1), (0, 0, 0), (0, 0, 1)
    greedy = _eval_results(tmp_path / "eval_key", {
        (prior, "train"): [solved] * 3 + [held] * 2 + [wrong] + [never] * 2,
        (ppo, "train"): [solved] * 5 + [held] + [pushed] + [never],  # pushed: on the wrong receptacle, never held
        (prior, "red_cube"): [never] * 8})
    sampled = _eval_results(tmp_path / "eval_t1_ppo", {(ppo, "train"): [solved] * 2 + [held] * 4 + [never] * 2},
                                  temperature=1.0)
    out = tmp_path / "failure_modes.json"
    main(Args(evals=[str(greedy), str(sampled)], out=str(out), labels=[f"{ppo}=ppo_it120"], markdown=True))
    cells = json.loads(out.read_text())["cells"]
    keys = ("episodes", "success_once", "never_held", "held_not_placed", "wrong_receptacle_at_end")

    def row(*values: int) -> dict:
        return dict(zip(keys, values, strict=True))

    assert cells == {
        "train": {"prior": row(8, 3, 2, 2, 1),
                  # held_not_placed = grasped 6 - success 5 - wrong receptacle 1 = 0: the pushed episode counts
                  # in never_held and in wrong_receptacle_at_end (the definition's arithmetic)
                  "ppo_it120": row(8, 5, 2, 0, 1)},
        # sampled at T=1: its own cell; --labels names the checkpoint that is first (`prior`) in its directory
        "train@T1": {"ppo_it120": row(8, 2, 2, 4, 0)},
        "red_cube": {"prior": row(8, 0, 8, 0, 0)}}
    printed = capsys.readouterr()
    assert ("| cell | prior: never held / held, not placed / wrong receptacle | "
            "ppo_it120: never held / held, not placed / wrong receptacle |") in printed.out
    assert "| train | 2 / 2 / 1 | 2 / 0 / 1 |" in printed.out and "| train@T1 | - | 2 / 4 / 0 |" in printed.out
    assert "train / ppo_it120: 1 episode" in printed.err  # the pushed episode is reported
    # without --labels, the lone checkpoint of the sampled evaluation is its `prior`
    main(Args(evals=[str(sampled)], out=str(out)))
    assert list(json.loads(out.read_text())["cells"]) == ["train@T1"]
    assert list(json.loads(out.read_text())["cells"]["train@T1"]) == ["prior"]
    # one clear line where an input lacks results or a per-episode field
    with pytest.raises(SystemExit, match="no .*results.json"):
        main(Args(evals=[str(tmp_path / "nothing")], out=str(out)))
    record = next((sampled / "runs").glob("*/train.json"))
    record.write_text(json.dumps({k: v for k, v in json.loads(record.read_text()).items()
                                  if k != "grasped_once_per_episode"}))
    with pytest.raises(SystemExit, match="has no grasped_once_per_episode"):
        main(Args(evals=[str(sampled)], out=str(out)))


def test_gradient_noise_scale_recovers_a_known_noise_scale():
    """bench/gradient_noise.py's estimator (McCandlish et al. 2018, appendix A) on synthetic per-episode gradients
    h_i = G + noise with |G|^2 = 1 and tr(Sigma) = 20: B_noise = 20 episodes, half-split cosine ~ 1 / (1 + 40 / M)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from gradient_noise import estimate, half_cosine, noise_scale, noise_scale_lower_bound

    gen = torch.Generator().manual_seed(0)
    m, p = 400, 50
    g = torch.zeros(p, dtype=torch.float64)
    g[0] = 1.0
    h = g + torch.randn(m, p, generator=gen, dtype=torch.float64) * (20 / p) ** 0.5
    gram = h @ h.T  # the estimators work on the Gram matrix of the per-episode gradients
    est = noise_scale(gram)
    assert est["G2"] == pytest.approx(1.0, abs=0.15) and est["trace_sigma"] == pytest.approx(20.0, rel=0.1)
    assert est["B_noise"] == pytest.approx(20.0, rel=0.2)
    assert est["G2"] == pytest.approx((m * h.mean(0).pow(2).sum() - h.pow(2).sum(1).mean()).item() / (m - 1))
    assert half_cosine(gram, 50, gen) == pytest.approx(1 / (1 + 40 / m), abs=0.05)
    assert 10 < noise_scale_lower_bound(gram, 500, gen) < 20  # a 95 % lower bound: below the truth, not far below
    noise = torch.randn(m, p, generator=gen, dtype=torch.float64)
    pure_noise = noise_scale(noise @ noise.T)["B_noise"]
    assert pure_noise is None or pure_noise > 100  # no signal: unresolved, or a scale far beyond the sample
    # --group-size: over groups of 4 independent episodes the estimate is in groups (5), reported in episodes
    grouped = estimate(gram, 4, 50, gen)
    assert grouped["B_noise"] == pytest.approx(20.0, rel=0.3) and grouped["trace_sigma"] == pytest.approx(5.0, rel=0.15)
    assert grouped["signal_fraction_at_24_episodes"] == pytest.approx(1 / (1 + grouped["B_noise"] / 24))


def test_gradient_noise_cross_cosine_sees_through_shared_noise():
    """bench/gradient_noise.py's `cross`: two advantages of the same episodes whose expected gradients meet at a known
    angle (cosine 0.6) and whose per-episode noise is mostly shared (as one episode's advantages share it): the signal
    cosine recovers 0.6 (the naive cosine of the two means would be pulled towards 1 by the shared noise), the
    half-split cosine has its sign, opposite signals read negative and orthogonal ones ~0."""
    sys.path.insert(0, str(ROOT / "bench"))
    from gradient_noise import cross_cosines

    gen = torch.Generator().manual_seed(0)
    m, p = 1000, 50
    g_a, g_b = torch.zeros(p, dtype=torch.float64), torch.zeros(p, dtype=torch.float64)
    g_a[0], g_b[0], g_b[1] = 1.0, 0.6, 0.8  # |G_a| = |G_b| = 1, G_a . G_b = 0.6
    scale = (300 / p) ** 0.5  # tr(Sigma) ~300 per episode: the means' noise (0.3) is a third of |G|^2
    shared = torch.randn(m, p, generator=gen, dtype=torch.float64) * scale
    h_a = g_a + shared + 0.3 * torch.randn(m, p, generator=gen, dtype=torch.float64) * scale
    h_b = g_b + shared + 0.3 * torch.randn(m, p, generator=gen, dtype=torch.float64) * scale
    out = cross_cosines(h_a @ h_b.T, h_a @ h_a.T, h_b @ h_b.T, 50, gen)
    naive = torch.nn.functional.cosine_similarity(h_a.mean(0), h_b.mean(0), dim=0).item()
    assert out["signal_cosine"] == pytest.approx(0.6, abs=0.1) and out["G_a_dot_G_b"] == pytest.approx(0.6, abs=0.1)
    assert naive > 0.65  # what the shared noise does to the plain cosine of the means
    assert 0.3 < out["half_split_cosine"] < 0.6  # disjoint halves: the noise lowers it, the sign stays
    flipped = cross_cosines(-h_a @ h_b.T, h_a @ h_a.T, h_b @ h_b.T, 50, gen)
    assert flipped["signal_cosine"] == pytest.approx(-out["signal_cosine"]) and flipped["half_split_cosine"] < -0.3
    g_c = torch.zeros(p, dtype=torch.float64)
    g_c[2] = 1.0  # orthogonal to G_a, its noise shared with a's as well
    h_c = g_c + shared + 0.3 * torch.randn(m, p, generator=gen, dtype=torch.float64) * scale
    assert cross_cosines(h_a @ h_c.T, h_a @ h_a.T, h_c @ h_c.T, 50, gen)["signal_cosine"] == pytest.approx(0, abs=0.1)


def test_gradient_noise_state_critic_is_cross_fitted():
    """bench/gradient_noise.py's `--state-critic-folds`: each episode's values come from a critic that never saw its
    returns (changing one episode's returns leaves its values, and moves others'), and a return that is a smooth
    function of the state is fitted well out of sample."""
    sys.path.insert(0, str(ROOT / "bench"))
    from gradient_noise import cross_fitted_values

    gen = torch.Generator().manual_seed(0)
    T, M, D = 10, 16, 4
    states, last = torch.randn(T, M, D, generator=gen), torch.randn(M, D, generator=gen)
    returns = torch.tanh(states[..., 0] - 0.5 * states[..., 1])
    alive = torch.ones(T, M, dtype=torch.bool)
    values, last_values, ev = cross_fitted_values(states, last, returns, alive, folds=4, steps=300, seed=0)
    assert values.shape == (T, M) and last_values.shape == (M,) and ev > 0.8
    changed = returns.clone()
    changed[:, 0] = -changed[:, 0]
    values2, _, _ = cross_fitted_values(states, last, changed, alive, folds=4, steps=300, seed=0)
    assert torch.equal(values2[:, 0], values[:, 0])  # its own fold's critic never saw episode 0
    assert not torch.equal(values2, values)  # the other folds' critics did


def test_perception_probe_reads_a_linear_target_and_not_noise():
    """bench/perception_probe.py's probe: a target that is a linear function of the features is recovered out of
    sample (held-out RMSE far below the spread), a target independent of them is not (RMSE ~ the spread)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from perception_probe import probe

    gen = torch.Generator().manual_seed(0)
    frames, p = 400, 50
    x = torch.randn(frames, p, generator=gen, dtype=torch.float64)
    episode = torch.arange(frames) // 10  # 40 episodes of 10 frames
    linear = x[:, :5] @ torch.randn(5, 1, generator=gen, dtype=torch.float64) + 0.1 * torch.randn(frames, 1, generator=gen, dtype=torch.float64)
    noise = torch.randn(frames, 1, generator=gen, dtype=torch.float64)
    out = probe(x, torch.cat([linear, noise], 1), episode, folds=4, seed=0)
    assert out["rmse"][0] < 0.3 * out["rmse_of_the_mean"][0]
    assert out["rmse"][1] > 0.9 * out["rmse_of_the_mean"][1]


def test_demo_likelihood_is_the_policys_nll_per_variant(tmp_path, tiny_dir, tiny_fp32):
    """bench/demo_likelihood.py: per variant, the NLL of the demonstrations' action tokens under the checkpoint's
    policy, each step under its own episode's instruction (the numbers of `evaluate_actions`, split by variant)."""
    import numpy as np
    from script_harness import write_demos

    tokens = write_demos(tmp_path / "demos.npz")  # episode 0: train (towel), episode 1: unseen_target (plate)
    out = tmp_path / "nll.json"
    subprocess.run([sys.executable, str(ROOT / "bench/demo_likelihood.py"), "--demos", str(tmp_path / "demos.npz"),
                    "--checkpoints", str(tiny_dir), "--labels", "tiny", "--unnorm-key", "panda_tabletop",
                    "--out", str(out)], check=True, capture_output=True)
    result = json.loads(out.read_text())["results"]["tiny"]
    model, processor = tiny_fp32
    images = torch.from_numpy(np.load(tmp_path / "demos.npz")["images"])
    for variant, instruction, rows in (("train", "put the green cube on the towel", slice(0, 3)),
                                       ("unseen_target", "put the green cube on the plate", slice(3, 6))):
        ids, mask, pixels = processor(images[rows], [instruction] * 3)
        with torch.no_grad():
            logprobs = model.evaluate_actions(ids, mask, pixels, tokens[rows]).logprobs  # (3, 7)
        assert result[variant]["steps"] == 3
        assert result[variant]["nll_per_action"] == pytest.approx(-logprobs.sum(-1).mean().item(), rel=1e-5)
        assert result[variant]["nll_per_dim"]["x"] == pytest.approx(-logprobs[:, 0].mean().item(), rel=1e-5)
        # one fixed action per episode: its steps all lie in one phase, whose NLL is the variant's
        (phase_nll,) = result[variant]["nll_per_action_by_phase"].values()
        assert phase_nll == pytest.approx(result[variant]["nll_per_action"], rel=1e-6)
    # the instruction's pull: KL(towel || plate) on the towel episode's steps, from the two instructions' distributions
    ids, mask, pixels = processor(images[:3], ["put the green cube on the towel"] * 3)
    other_ids, other_mask, _ = processor(images[:3], ["put the green cube on the plate"] * 3)
    first, last = model.config.action_token_ids.start, model.config.action_token_ids.stop  # the 256 action columns
    with torch.no_grad():
        own = model.evaluate_actions(ids, mask, pixels, tokens[:3])
        own_lp = torch.log_softmax(model(ids, mask, pixels, tokens[:3])[0][..., first:last], -1)
        other_lp = torch.log_softmax(model(other_ids, other_mask, pixels, tokens[:3])[0][..., first:last], -1)
    assert torch.allclose(own_lp.gather(-1, (tokens[:3] - first).unsqueeze(-1))[..., 0], own.logprobs, atol=1e-5)
    kl = (own_lp.exp() * (own_lp - other_lp)).sum((-1, -2)).mean().item()
    assert kl > 0 and result["train"]["kl_to_instruction"] == {"put the green cube on the plate": pytest.approx(kl, rel=1e-4)}
    # by phase: the episode's steps all lie in one phase, which holds the same KL
    assert list(result["train"]["kl_to_instruction_by_phase"].values()) == [
        {"put the green cube on the plate": pytest.approx(kl, rel=1e-4)}]


def test_carry_phase_starts_at_the_expert_s_first_grasp():
    """bench/demo_likelihood.py's phase split: `carry` from the first closed-gripper step (-1) of each episode to its
    end, release included; `reach` before it; an episode that never closes is all `reach`."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "bench"))
    from demo_likelihood import carry_phase

    episodes = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2])
    gripper = np.array([1, 1, -1, 1, -1, -1, 1, 1, 1], dtype=np.float32)
    assert carry_phase(episodes, gripper).tolist() == [False, False, True, True, True, True, True, False, False]


def _beside(command: list[str], work, **popen) -> tuple[str, str]:
    """Run `command` in a subprocess while `work()` runs here (both start env workers: overlapping them halves the
    test's wait) -> the subprocess's (stdout, stderr); a non-zero exit fails the test."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    try:
        work()
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    return stdout, stderr


def _other_receptacle_xy(task):
    """(2,) the xy of the one receptacle of a two-receptacle scene that the instruction does not name."""
    (other,) = [r.pose.p[0, :2].numpy() for r in task.receptacles if r is not task.target_actor]
    return other


def test_receptacle_choice_splits_episodes_by_the_nearer_receptacle(tmp_path, train_envs, renderer_kept_alive):
    """bench/receptacle_choice.py on synthetic records of `train` (6 checkpoints, checkpoint k wrong on episode k
    only, so each checkpoint's split pins one episode's flag), `unseen_target` and `train` sampled at T=1. The test
    recreates episode i's layout itself: seed settings.seed + i, an in-process env whose first images match the
    evaluation's CPU workers (conftest's `train_envs`, made by make_envs as eval_generalization.py makes them);
    target nearer = the goal (the towel) nearer to the cube than the plate is."""
    import gymnasium as gym
    import numpy as np

    import openvla_envs

    sys.path.insert(0, str(ROOT / "bench"))
    from receptacle_choice import Args, main

    n, ckpts = 6, [f"runs/learning/ck{k}" for k in range(6)]
    records = {k: [(int(i != k), 1, int(i == k)) for i in range(n)] for k in range(n)}  # (success, held, wrong)
    key = _eval_results(tmp_path / "eval_key", {(c, "train"): records[k] for k, c in enumerate(ckpts)})
    sib = _eval_results(tmp_path / "eval_sib", {(ckpts[0], "unseen_target"): records[0]})
    sampled = _eval_results(tmp_path / "eval_t1", {(ckpts[0], "train"): records[0]}, temperature=1.0)
    out = tmp_path / "receptacle_choice.json"
    seeds, nearer = [10**7 + i for i in range(n)], {}  # _eval_results' settings.seed, + i

    def layouts() -> None:  # meanwhile, the layouts from the test's own env
        env = gym.make(openvla_envs.TABLETOP_ENV_ID, obs_mode="rgb", control_mode="pd_ee_delta_pose",
                       render_backend="cpu")
        seen = {}
        for seed in [*reversed(seeds), *seeds]:  # twice, in another order: a seed fixes the layout
            obs, _ = env.reset(seed=seed)
            cube, goal = obs["extra"]["obj_pose"][0, :2].numpy(), obs["extra"]["goal_pos"][0, :2].numpy()
            plate = _other_receptacle_xy(env.unwrapped)
            state = (cube.tolist(), goal.tolist(), plate.tolist())
            assert seen.setdefault(seed, state) == state
            nearer[seed] = bool(np.linalg.norm(goal - cube) < np.linalg.norm(plate - cube))
            seen[seed, "image"] = obs["sensor_data"]["third_view"]["rgb"][0]
        for pair in (seeds[0:2], seeds[4:6]):  # the evaluation's envs see the same scenes
            images, _ = train_envs.reset(pair)
            assert all(torch.equal(images[j], seen[s, "image"]) for j, s in enumerate(pair))
        env.close()

    stdout, stderr = _beside([sys.executable, str(ROOT / "bench/receptacle_choice.py"), "--evals", str(key), str(sib),
                              str(sampled), "--out", str(out), "--markdown"], layouts)
    flags = [nearer[s] for s in seeds]
    assert 0 < sum(flags) < n  # both groups present at these seeds (else the test pins nothing)

    def split(episodes: list[tuple[int, int, int]], flags: list[bool]) -> dict:
        groups = {g: {"episodes": 0, "success_once": 0, "wrong_receptacle_at_end": 0}
                  for g in ("target_nearer", "target_farther")}
        for (success, _, wrong), near in zip(episodes, flags, strict=True):
            group = groups["target_nearer" if near else "target_farther"]
            group["episodes"] += 1
            group["success_once"] += success
            group["wrong_receptacle_at_end"] += wrong
        return groups

    cells = json.loads(out.read_text())["cells"]
    labels = ["prior", *(f"ck{k}" for k in range(1, n))]
    assert cells["train"] == {label: split(records[k], flags) for k, label in enumerate(labels)}
    # unseen_target: train's layouts seed for seed, the plate instructed: every episode changes group
    assert cells["unseen_target"] == {"prior": split(records[0], [not f for f in flags])}
    assert cells["train@T1"] == {"prior": split(records[0], flags)}
    assert f"({n + n} layouts)" in stderr  # per (variant, seed), shared by checkpoints and temperatures
    row = split(records[1], flags)
    assert (f"| train | ck1 | {' / '.join(map(str, row['target_nearer'].values()))} | "
            f"{' / '.join(map(str, row['target_farther'].values()))} |") in stdout
    # one clear line for a variant of another task, and for an evaluation without its per-episode records
    other = _eval_results(tmp_path / "eval_bridge", {(ckpts[0], "PutCarrotOnPlateInScene-v1"): records[0]})
    with pytest.raises(SystemExit, match="error: 'PutCarrotOnPlateInScene-v1' is not a variant of the built-in"):
        main(Args(evals=[str(other)], out=str(out)))
    next((sib / "runs").glob("*/unseen_target.json")).unlink()
    with pytest.raises(SystemExit, match="error: no .*unseen_target.json"):
        main(Args(evals=[str(sib)], out=str(out)))


def test_receptacle_choice_counts_the_demos_held_steps_where_the_target_is_nearest(tmp_path, renderer_kept_alive):
    """bench/receptacle_choice.py --demos on a file of the real collector (sft_openvla.py --demos-only: one clean
    demonstration of `train`, one of `unseen_target`; --demo-seed 1000001 makes the instructed receptacle the
    farther one at the start of the first and the nearer one of the second). The test recreates the receptacles
    itself, from its own env reset with the seed that collect_demos resets with (demo_seed + 100_000 * variant
    index, the first attempt), and counts the held steps where the target is nearer to the cube than the other
    receptacle. A file whose seeds are off by one is refused with one line."""
    import gymnasium as gym
    import numpy as np
    from script_harness import run_in_process

    import openvla_envs

    sys.path.insert(0, str(ROOT / "bench"))
    from receptacle_choice import Args, main

    demos, out = tmp_path / "demos.npz", tmp_path / "receptacle_choice.json"
    seeds, receptacles = {"train": 1_000_001, "unseen_target": 1_100_001}, {}

    def layouts() -> None:  # meanwhile, each episode's receptacles from the test's own env: the target's and the other's
        for variant, seed in seeds.items():
            env_id, kwargs, _ = openvla_envs.resolve(variant)
            env = gym.make(env_id, obs_mode="rgb", control_mode="pd_ee_delta_pose", render_backend="cpu", **kwargs)
            obs, _ = env.reset(seed=seed)
            receptacles[variant] = obs["extra"]["goal_pos"][0, :2].numpy(), _other_receptacle_xy(env.unwrapped)
            env.close()

    _beside([sys.executable, str(ROOT / "sft_openvla.py"), "--demos-only", "--variants", "train", "unseen_target",
             "--demos-per-task", "1", "--num-envs", "1", "--episode-steps", "45", "--expert-noise", "0",
             "--state-aux-coef", "1", "--demo-seed", "1000001", "--env-backend", "cpu", "--demos-path", str(demos)],
            layouts, cwd=tmp_path)
    layout = openvla_envs.BUILTIN_STATE_LAYOUT
    with np.load(demos, allow_pickle=False) as arrays:
        files = dict(arrays)
    assert files["variants"].tolist() == list(seeds) and files["seeds"].tolist() == list(seeds.values())
    expected = {}
    for e, variant in enumerate(seeds):
        states = files["states"][files["episode_starts"][e] : files["episode_starts"][e + 1]]
        target, other = receptacles[variant]
        np.testing.assert_allclose(states[0, layout["goal_pos"]][:2], target, atol=1e-5)  # the seed is the reset's
        cubes = states[states[:, layout["is_grasped"]][:, 0] > 0.5, layout["obj_pose"]][:, :2]
        flags = [bool(np.linalg.norm(target - c) < np.linalg.norm(other - c)) for c in cubes]
        expected[variant] = {"held_steps": len(flags), "held_steps_target_nearer": sum(flags), "episodes": 1,
                             "first_held_target_nearer": int(flags[0])}
    # the seeds pin both outcomes at the lift; the carry brings the cube nearer to the target
    assert [expected[v]["first_held_target_nearer"] for v in seeds] == [0, 1]
    assert 0 < expected["train"]["held_steps_target_nearer"] < expected["train"]["held_steps"]
    code, stdout, _ = run_in_process("bench/receptacle_choice.py",
                                     ["--demos", str(demos), "--out", str(out), "--markdown"], cwd=tmp_path)
    assert code == 0
    assert json.loads(out.read_text())["demos"] == expected
    c = expected["train"]
    assert f"| train | {c['held_steps']} / {c['held_steps_target_nearer']} (" in stdout
    # one clear line for a wrong seed (the recreated target is not the stored goal), and for nothing to read
    np.savez(tmp_path / "wrong.npz", **{**files, "seeds": files["seeds"] + 1})
    with pytest.raises(SystemExit, match=r"error: .*episode 0 \(train, seed 1000002\): the recreated target lies"):
        main(Args(demos=str(tmp_path / "wrong.npz"), out=str(out)))
    with pytest.raises(SystemExit, match="error: nothing to read"):
        main(Args(out=str(out)))


def test_hybrid_checkpoints_keep_one_half_of_the_change_each(tmp_path):
    """bench/hybrid_checkpoints.py: the adapter-only hybrid has no towers (the base's are loaded) and the run's
    adapter; the towers-only one keeps the towers and zeroes every lora_B (B @ A = 0: the base LM's function)."""
    from safetensors.torch import load_file, save_file

    sys.path.insert(0, str(ROOT / "bench"))
    import hybrid_checkpoints

    run = tmp_path / "iter_000120"
    run.mkdir()
    adapter = {"q_proj.lora_A.weight": torch.randn(4, 8), "q_proj.lora_B.weight": torch.randn(8, 4)}
    save_file(adapter, run / "adapter_model.safetensors")
    save_file({"projector.fc1.weight": torch.randn(3, 3)}, run / "vision.safetensors")
    for name in ("openvla_rl.json", "adapter_config.json", "optimizer.pt"):
        (run / name).write_text("{}")
    lora_only, towers_only = hybrid_checkpoints.make_hybrids(run, tmp_path / "out", "it120")
    assert not (lora_only / "vision.safetensors").exists() and not (lora_only / "optimizer.pt").exists()
    assert all(torch.equal(load_file(lora_only / "adapter_model.safetensors")[k], v) for k, v in adapter.items())
    assert (towers_only / "vision.safetensors").read_bytes() == (run / "vision.safetensors").read_bytes()
    zeroed = load_file(towers_only / "adapter_model.safetensors")
    assert torch.equal(zeroed["q_proj.lora_A.weight"], adapter["q_proj.lora_A.weight"])
    assert not zeroed["q_proj.lora_B.weight"].any()
    (run / "vision.safetensors").unlink()  # not a --train-vision checkpoint: one line naming the fix
    with pytest.raises(FileNotFoundError, match="--train-vision"):
        hybrid_checkpoints.make_hybrids(run, tmp_path / "other")
