"""How much of one PPO iteration's policy gradient is signal: the gradient noise scale, measured on the task.

    python bench/gradient_noise.py --checkpoint runs/learning/ppo/<run>/checkpoints/iter_000120 \
        --episodes 96 --out bench/results/gradient_noise.json

Why. In the learning experiment (BENCHMARKS.md section 4) PPO moved the greedy policy but not the sampled one,
whose success it optimises, and more passes over each batch made it worse. Both fit updates whose direction is
mostly noise. This measures that directly, with the script's own pieces.

Method (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training", appendix A). Roll out `episodes`
episodes of the task with the checkpoint's sampling policy (`--temperature`, 1 as in training; seeds from the
rollout band), compute
advantages as `ppo_openvla` does (`episode_masks`, `compute_gae` with the checkpoint's value head, time limits
bootstrapped, normalised over the steps in the loss), then the gradient of the policy-gradient loss (PPO's
surrogate at ratio 1) with respect to the trainable LoRA weights, one episode at a time:
    h_i = -M / n * sum over episode i's steps in the loss of A_t * grad log pi(a_t | s_t)
(M episodes, n steps in the loss in all), so that the batch gradient of any B episodes is the mean of their h_i.
With G the expected gradient and Sigma the covariance of one episode's h_i, E|mean of B h_i|^2 = |G|^2 + tr(Sigma)/B;
the mean of |h_i|^2 (B = 1) and |mean of all h_i|^2 (B = M) give unbiased estimates of |G|^2 and tr(Sigma), and
    B_noise = tr(Sigma) / |G|^2   (in episodes)
is the batch at which signal and noise weigh the same. An update from B episodes points along G with cosine
~ 1 / sqrt(1 + B_noise / B), and an SGD step at its best learning rate gains 1 / (1 + B_noise / B) of what the
exact gradient would. A model-free check beside it: the cosine between the gradients of two disjoint halves
of the episodes (expected ~ 1 / (1 + 2 B_noise / M)), averaged over random splits.
Where M episodes cannot resolve the signal (the |G|^2 estimate near or below 0), a lower bound: flipping the sign
of each h_i at random gives the statistic's distribution without signal (the noise is symmetric about G), so
|G|^2 <= (estimate - its 5 % null quantile), at 95 %, and B_noise >= tr(Sigma) / that.
Three advantages from the same rollout: `gae` (PPO's, with the learned critic), `mc` (the discounted return
minus the batch mean, normalised: what GRPO and REINFORCE see, no critic) and `synthetic`, an instrument check
that is not the task: reward 1 for each step whose x token lies in the upper half of the bins (a per-step,
immediate signal like the review's bandit, which PPO learns in a few iterations), minus its mean. With
`--reward shaped|progress` two more on the same episodes, so that the rewards' noise scales compare on one sample
of the policy: `mc_<reward>`, the critic-free advantage of that reward (openvla_envs), and `now_<reward>`, each
step's own reward alone (gamma 0): what a perfect critic would leave of the step's credit, without the noise of
what happens later. If `now_` resolves where `mc_` does not, the noise is in the credit assignment (a better
critic helps); if neither does, a single step's tokens move the reward too little. And `gae_<reward>` /
`gae0_<reward>`: GAE of that reward with the checkpoint's critic at `--gae-lambda` and at lambda 0 (meaningful
for a checkpoint whose critic learned that reward, e.g. a `--reward progress` PPO run).
`critic0` (with those): TD(0)'s critic part alone, gamma V(s') - V(s) (the TD error without the reward), which
`gae0_<reward>` adds to `now_<reward>`.
Which way each advantage points (`cross`, for every pair of the advantages above): the cosine between the two
expected gradients G_a and G_b, from G_a . G_b estimated over pairs of distinct episodes (one episode's two
advantages share its noise, so its own pair is left out) and |G_a|^2, |G_b|^2 as above (None where either is
unresolved; barely resolved estimates make it noisy, even beyond +-1), and the model-free check: the cosine between
one half's mean gradient of a and the other half's of b, averaged over random splits, whose sign is that of G_a . G_b. `mc_<reward>` is the unbiased estimate of the reward's
return gradient: an advantage that resolves but points away from it (or from `now_<reward>`) moves the policy along
its critic's errors, not along the reward.
`--by-token KEY ...` splits those advantages' gradients by the tokens whose log-probs carry them: `KEY@xyz` (the
three translation tokens), `KEY@rotation` (three; the built-in tasks' norm stats map every bin to 0 rotation, so
they act only through the gripper token that follows them) and `KEY@gripper`; the three sum to KEY's (checked
per episode). Where the signal and where the noise of an update sit.
`--group-size S` rolls the episodes out as GRPO does, in groups of S from one reset seed (`grpo_openvla`'s
`group_seeds`), and adds `grpo`, GRPO's advantage (`group_advantages`: the episode's discounted return against
its group's mean, over its std). The episodes of a group share a layout and are not independent, so then every
estimate is taken over groups (h of a group = the mean of its episodes') and converted back to episodes (x S).
If `grpo` resolves where `mc` does not, the noise is in the layouts' differences, which a per-layout baseline
removes.
`--state-critic-folds K` asks what a critic on the simulator's state (`ppo_openvla --critic state`, deviation 9)
would leave of the noise: it keeps each step's state (`openvla_envs.state_vector`), fits `ppo_openvla.StateCritic`
to the discounted returns K times, each time on all episodes but one K-th and predicting that K-th (cross-fitting,
so no episode's values saw its own return), and adds `state_gae` (GAE at `--gae-lambda` with those values) and
`state_gae0` (lambda 0); `state_critic_explained_variance` is the held-out values' against the returns. A critic
fitted on M (K - 1) / K episodes knows less than one trained over a run's thousands: an upper bound on the noise.
A checkpoint of a `--critic state` run (`state_critic.pt`) gives `gae` from its own critic.
`--vision` also takes every gradient with respect to the vision towers and the projector (what the scripts'
`--train-vision` trains; frozen in the checkpoint's run) and reports each advantage twice more: `KEY#vision`
(towers and projector alone) and `KEY#all` (LoRA and vision together); `KEY` stays the LoRA weights'. Does the
reward respond to the image features more than to how the LM reads them (issue 12's cause 3)?
"""

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import tyro
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import openvla_envs  # noqa: E402
import openvla_patch as ovp  # noqa: E402
from grpo_openvla import group_advantages, group_seeds  # noqa: E402  (the scripts' own pieces)
from ppo_openvla import CKPT_INFO, STATE_CRITIC_FILE, StateCritic, compute_gae, episode_masks  # noqa: E402


@dataclass
class Args:
    checkpoint: str
    """an RL checkpoint directory (openvla_rl.json, adapter, value head): its policy and critic are measured"""
    env_id: str = "train"
    """the variant rolled out"""
    episodes: int = 96
    """episodes rolled out (M); the estimate's precision grows with M"""
    num_envs: int = 8
    """parallel envs (worker processes on the CPU back-end)"""
    num_steps: int = 80
    """steps per episode"""
    reward: Literal["sparse", "shaped", "progress"] = "sparse"
    """the env's reward (the scripts' --reward): shaped or progress adds its mc_, now_, gae_ and gae0_ advantages"""
    temperature: float = 1.0
    """sampling temperature of the rollout and of the log-probs (the scripts' --temperature: a lower one is a
    sharper policy with less noise per step)"""
    gamma: float = 0.99
    """discount factor (PPO's default)"""
    gae_lambda: float = 0.95
    """GAE lambda (PPO's default)"""
    splits: int = 200
    """random half/half splits of the episodes: for the model-free cosine and for B_noise's spread"""
    seed: int = 0
    """seed of the rollout seeds, the sampling and the splits"""
    group_size: int = 1
    """> 1: roll out in groups of this size from one reset seed and add the `grpo` advantage (see above)"""
    by_token: list[str] = field(default_factory=list)
    """advantages (keys above, e.g. gae0_progress) whose gradient is also split by token group: KEY@xyz,
    KEY@rotation, KEY@gripper"""
    vision: bool = False
    """also measure the gradients with respect to the vision towers and the projector (KEY#vision, KEY#all)"""
    state_critic_folds: int = 0
    """> 1: add `state_gae` and `state_gae0`, GAE with a critic on the simulator's state cross-fitted over this
    many folds of the episodes (see above); 0: off"""
    state_critic_steps: int = 2000
    """Adam steps (lr 1e-3, 512 states each) of each fold's critic"""
    out: str = ""
    """write the results as JSON here (empty: print only)"""


# Every estimate below needs the per-episode gradients h (M, P) only through their Gram matrix K = h h^T (M x M):
# |h_i|^2 = K_ii, |mean of a set S|^2 = sum of K over S x S / |S|^2. So K is formed once (one matrix product)
# and the splits and sign flips cost O(M^2) each instead of touching all P parameters again.

def noise_scale(gram: torch.Tensor) -> dict[str, float | None]:
    """gram (M, M): Gram matrix of per-episode gradients in batch-mean units -> |G|^2, tr(Sigma), B_noise
    (unbiased, appendix A). B_noise is None where the |G|^2 estimate is not positive: the noise of M episodes
    hides the signal."""
    m = gram.shape[0]
    small = gram.diagonal().mean()  # mean |h_i|^2: E = |G|^2 + tr(Sigma)
    big = gram.sum() / m**2  # |mean h_i|^2: E = |G|^2 + tr(Sigma) / M
    g2 = (m * big - small) / (m - 1)
    trace = (small - big) * m / (m - 1)
    return {"G2": g2.item(), "trace_sigma": trace.item(),
            "B_noise": (trace / g2).item() if g2 > 0 else None}


def noise_scale_lower_bound(gram: torch.Tensor, flips: int, gen: torch.Generator) -> float | None:
    """A 95 % lower bound on B_noise from random sign flips z of the h_i (the statistic's no-signal distribution);
    None when even the bound is not positive. |sum z_i h_i|^2 = z^T K z."""
    m = gram.shape[0]
    small = gram.diagonal().mean()
    z = torch.randint(0, 2, (flips, m), generator=gen, dtype=gram.dtype) * 2 - 1  # (flips, M)
    null = ((z @ gram) * z).sum(1) / m - small  # (M - 1) * the |G|^2 estimate, per flip
    observed = gram.sum() / m - small
    g2_upper = (observed - torch.quantile(null, 0.05)) / (m - 1)
    return (noise_scale(gram)["trace_sigma"] / g2_upper).item() if g2_upper > 0 else None


def half_cosine(gram: torch.Tensor, splits: int, gen: torch.Generator, cross: torch.Tensor | None = None,
                gram_b: torch.Tensor | None = None) -> float:
    """The cosine between the mean gradients of two random disjoint halves, averaged over `splits` splits. With
    `cross` (C_ij = h_i^a . h_j^b) and `gram_b`, one half's mean of a against the other half's of b (both ways)."""
    cross, gram_b = (gram, gram) if cross is None else (cross, gram_b)
    m = gram.shape[0]
    cosines = []
    for _ in range(splits):
        perm = torch.randperm(m, generator=gen)
        first, second = perm[: m // 2], perm[m // 2 : 2 * (m // 2)]
        for x, y in ((first, second), (second, first)):  # (sums of) dot products; the same both ways when a = b
            ab, aa, bb = cross[x][:, y].sum(), gram[x][:, x].sum(), gram_b[y][:, y].sum()
            cosines.append((ab / (aa * bb).sqrt().clamp_min(1e-300)).item())
    return float(np.mean(cosines))


def cross_cosines(cross: torch.Tensor, gram_a: torch.Tensor, gram_b: torch.Tensor, splits: int,
                  gen: torch.Generator) -> dict[str, float | None]:
    """cross (M, M): C_ij = h_i^a . h_j^b, the per-episode gradients of two advantages a and b; gram_a, gram_b their
    own Gram matrices -> the cosine between their expected gradients G_a, G_b (G_a . G_b from the pairs i != j:
    unbiased whatever episode i's a and b share; None where |G_a|^2 or |G_b|^2 is not resolved) and the model-free
    half-split cosine (half A's mean of a against half B's mean of b, and B's a against A's b), averaged over splits."""
    m = cross.shape[0]
    dot = (cross.sum() - cross.diagonal().sum()) / (m * (m - 1))
    g2_a, g2_b = noise_scale(gram_a)["G2"], noise_scale(gram_b)["G2"]
    signal = (dot / (g2_a * g2_b) ** 0.5).item() if g2_a > 0 and g2_b > 0 else None
    return {"G_a_dot_G_b": dot.item(), "signal_cosine": signal,
            "half_split_cosine": half_cosine(gram_a, splits, gen, cross, gram_b)}


def estimate(gram: torch.Tensor, group_size: int, splits: int, gen: torch.Generator) -> dict:
    """gram (M, M): Gram matrix of the per-episode gradients -> every reported estimate, B_noise in episodes. The
    independent unit is a group of `group_size` consecutive episodes (1: an episode): a group's gradient is its
    episodes' mean, the estimates are taken over groups, and a B_noise in groups is `group_size` times as many
    episodes."""
    s = group_size
    units = gram.shape[0] // s
    gram = gram.view(units, s, units, s).mean((1, 3))  # the groups' mean gradients' Gram matrix (M / S, M / S)
    in_episodes = lambda b: None if b is None else b * s  # noqa: E731
    est = noise_scale(gram)  # trace_sigma per unit
    est["B_noise"] = in_episodes(est["B_noise"])
    # spread: the estimate on random halves (without replacement: a resample with repeats would count the
    # repeated episodes' agreement as signal); wider than the full sample's, so a conservative range
    halves = []
    for _ in range(splits):
        half = torch.randperm(units, generator=gen)[: units // 2]
        halves.append(noise_scale(gram[half][:, half])["B_noise"])
    halves = np.array([np.inf if b is None else b * s for b in halves])  # unresolved = beyond any batch
    est["B_noise_on_halves_5_50_95"] = [None if np.isinf(q) else float(q)
                                        for q in np.quantile(halves, (0.05, 0.5, 0.95), method="nearest")]
    est["half_split_cosine"] = half_cosine(gram, splits, gen)
    est["B_noise_lower_bound_95"] = in_episodes(noise_scale_lower_bound(gram, 10 * splits, gen))
    for b in (24, 96, 384):  # the share of an update's expected gain that B episodes deliver
        est[f"signal_fraction_at_{b}_episodes"] = 0.0 if est["B_noise"] is None else 1 / (1 + max(est["B_noise"], 0) / b)
    return est


def cross_fitted_values(states: torch.Tensor, last_states: torch.Tensor, returns: torch.Tensor, alive: torch.Tensor,
                        folds: int, steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """states (T, M, D), last_states (M, D) after the last step, returns (T, M) the targets, alive (T, M) the steps
    in the loss -> values (T, M), last_values (M,) and their explained variance on the alive steps (nan: constant
    returns): episode i's from a `StateCritic` fitted (Adam, lr 1e-3, 512 alive states per step, squared error) on
    the other folds' episodes."""
    T, M, D = states.shape
    values, last_values = torch.zeros(T, M), torch.zeros(M)
    gen = torch.Generator().manual_seed(seed)
    fold_of = torch.randperm(M, generator=gen) % folds  # (M,)
    for k in range(folds):
        train = (fold_of != k)[None].expand(T, M) & alive
        x, y = states[train], returns[train]  # (S, D), (S,)
        torch.manual_seed(seed + k)
        critic = StateCritic(D)
        optimizer = torch.optim.Adam(critic.parameters(), lr=1e-3)
        for _ in range(steps):
            j = torch.randint(len(y), (512,), generator=gen)
            loss = 0.5 * ((critic(x[j]) - y[j]) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            held = fold_of == k
            values[:, held], last_values[held] = critic(states[:, held]), critic(last_states[held])
    y, pred = returns[alive], values[alive]
    return values, last_values, float("nan") if y.var() == 0 else (1 - (y - pred).var() / y.var()).item()


def main(args: Args) -> None:
    if args.episodes % args.num_envs or args.episodes < 4:
        raise SystemExit(f"error: --episodes ({args.episodes}) must be a multiple of --num-envs and at least 4")
    if args.group_size < 1 or args.num_envs % args.group_size or args.episodes // args.group_size < 4:
        raise SystemExit(f"error: --group-size ({args.group_size}) must divide --num-envs and leave at least 4 groups")
    if args.state_critic_folds == 1 or args.state_critic_folds > args.episodes:
        raise SystemExit(f"error: --state-critic-folds ({args.state_critic_folds}) must be 0 (off) or 2..--episodes")
    ckpt = Path(args.checkpoint)
    if not (ckpt / CKPT_INFO).exists():
        raise SystemExit(f"error: {ckpt} is not an RL checkpoint (no {CKPT_INFO}): pass .../checkpoints/iter_NNNNNN")
    info = json.loads((ckpt / CKPT_INFO).read_text())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    run_critic = None  # a --critic state run's own critic
    if (ckpt / STATE_CRITIC_FILE).exists():
        weights = torch.load(ckpt / STATE_CRITIC_FILE, map_location="cpu")
        run_critic = StateCritic(weights["net.0.weight"].shape[1])
        run_critic.load_state_dict(weights)
    with_states = run_critic is not None or args.state_critic_folds > 1
    model, processor = ovp.load_vla(info["vla_path"], device=device, dtype=torch.float32, adapter_path=ckpt,
                                    with_value_head=run_critic is None)
    stats = ovp.action_stats(model.config, info["unnorm_key"])
    params = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("value_head.")]
    n_lora = sum(p.numel() for p in params)  # each gradient row: the LoRA weights', then (--vision) the towers'
    if args.vision:
        ovp.make_vision_trainable(model)
        params += list(ovp.vision_modules(model).parameters())
    envs = openvla_envs.make_envs(args.env_id, args.num_envs, device=device, backend="cpu", reward=args.reward,
                                  max_episode_steps=args.num_steps, state_obs=with_states)
    rng = np.random.default_rng(args.seed)

    # --- rollout: the sampling policy, as in ppo_openvla (stored per episode: images, prompt, tokens) ---------
    T, M = args.num_steps, args.episodes
    obs = torch.zeros((T, M, 224, 224, 3), dtype=torch.uint8)
    tokens = torch.zeros((T, M, ovp.ACTION_DIM), dtype=torch.long)
    values, successes, env_rewards = torch.zeros((T, M)), torch.zeros((T, M), dtype=torch.bool), torch.zeros((T, M))
    last_values, prompts = torch.zeros(M), []
    states = torch.zeros((T, M, envs.state_dim)) if with_states else None  # (T, M, D) the simulator's state
    last_states = torch.zeros((M, envs.state_dim)) if with_states else None
    model.eval()
    start = time.time()
    for first in tqdm(range(0, M, args.num_envs), desc="rollout", unit="round"):
        cols = slice(first, first + args.num_envs)
        next_obs, instructions = envs.reset(group_seeds(rng, args.num_envs, args.group_size))
        input_ids, attention_mask = processor.tokenize(instructions, device=device)
        prompts += [(input_ids[i], attention_mask[i]) for i in range(args.num_envs)]
        for t in range(T):
            obs[t, cols] = next_obs.cpu()
            if with_states:
                states[t, cols] = envs.states.cpu()
            with torch.no_grad():
                sample = model.generate_actions(input_ids, attention_mask, processor.process_images(next_obs),
                                                temperature=args.temperature)
                values[t, cols] = (sample.values if run_critic is None else run_critic(envs.states.cpu())).cpu()
            tokens[t, cols] = sample.tokens.cpu()
            next_obs, reward, _, infos = envs.step(ovp.tokens_to_actions(sample.tokens.cpu(), model.config, stats))
            successes[t, cols], env_rewards[t, cols] = infos["success"].cpu(), reward.cpu()
        with torch.no_grad():
            if with_states:
                last_states[cols] = envs.states.cpu()
            last_values[cols] = (run_critic(last_states[cols]) if run_critic is not None else model.generate_actions(
                input_ids, attention_mask, processor.process_images(next_obs), greedy=True).values.cpu())
    envs.close()
    rollout_s = time.time() - start

    # --- advantages: PPO's (GAE, learned critic) and the critic-free one (discounted return - mean) -------------
    alive, terminals = episode_masks(successes, True)  # (T, M): credit ends at the first success
    rewards = (successes & alive).float()  # 1 at the first success
    advantages = {"gae": compute_gae(rewards, values, terminals, last_values, args.gamma, args.gae_lambda)[0],
                  "mc": compute_gae(rewards, torch.zeros_like(values), terminals, torch.zeros(M), args.gamma, 1.0)[0],
                  "synthetic": (tokens[..., 0] - model.config.action_token_ids[0] >= 128).float()}  # x, upper bins
    if args.reward != "sparse":
        dense = env_rewards * alive  # as the scripts do: the reward up to the first success, nothing after
        advantages[f"mc_{args.reward}"] = compute_gae(dense, torch.zeros_like(values), terminals, torch.zeros(M),
                                                      args.gamma, 1.0)[0]
        advantages[f"now_{args.reward}"] = dense
        for key, lam in ((f"gae_{args.reward}", args.gae_lambda), (f"gae0_{args.reward}", 0.0)):
            advantages[key] = compute_gae(dense, values, terminals, last_values, args.gamma, lam)[0]
        advantages["critic0"] = compute_gae(torch.zeros_like(dense), values, terminals, last_values, args.gamma, 0.0)[0]
    if args.state_critic_folds > 1:  # a critic on the simulator's state, cross-fitted (see above)
        returns = compute_gae(rewards, torch.zeros_like(values), terminals, torch.zeros(M), args.gamma, 1.0)[0]
        state_values, state_last, state_ev = cross_fitted_values(states, last_states, returns, alive,
                                                                 args.state_critic_folds, args.state_critic_steps, args.seed)
        for key, lam in (("state_gae", args.gae_lambda), ("state_gae0", 0.0)):
            advantages[key] = compute_gae(rewards, state_values, terminals, state_last, args.gamma, lam)[0]
    if args.group_size > 1:  # GRPO's: the return against the group's, at every step of the episode
        returns = (args.gamma ** torch.arange(T, dtype=torch.float32)[:, None] * rewards).sum(0)  # (M,)
        advantages["grpo"] = group_advantages(returns, args.group_size, scale_rewards=True).expand(T, M)
    unknown = set(args.by_token) - set(advantages)
    if unknown:
        raise SystemExit(f"error: --by-token {sorted(unknown)}: not among the advantages {sorted(advantages)}")
    n = alive.sum()
    for key, adv in advantages.items():
        if key == "grpo":  # its baseline is the group's; a batch-wide one on top would change it
            continue
        mean = adv[alive].mean()
        advantages[key] = (adv - mean) / (adv[alive].std(unbiased=False) + 1e-8)

    # --- per-episode gradients of the policy-gradient loss (LoRA weights) -------------------------------------------
    groups = {"xyz": slice(0, 3), "rotation": slice(3, 6), "gripper": slice(6, 7)}  # token positions of OpenVLA's action
    losses = [(key, key, slice(0, ovp.ACTION_DIM)) for key in advantages]  # (name, advantage, tokens)
    losses += [(f"{key}@{group}", key, positions) for key in args.by_token for group, positions in groups.items()]
    grads = {name: [] for name, _, _ in losses}
    model.train()
    for i in tqdm(range(M), desc="gradients", unit="episode"):
        steps = alive[:, i].nonzero().squeeze(-1)
        ids, mask = prompts[i]
        ev = model.evaluate_actions(ids.expand(len(steps), -1), mask.expand(len(steps), -1),
                                    processor.process_images(obs[steps, i].to(device)), tokens[steps, i].to(device),
                                    temperature=args.temperature)
        for k, (name, key, positions) in enumerate(losses):
            logprob = ev.logprobs[:, positions].sum(-1)  # (steps,) over all 7: the composite action's, as in ppo_update
            loss = -(advantages[key][steps, i].to(device) * logprob).sum() * M / n
            g = torch.autograd.grad(loss, params, retain_graph=k < len(losses) - 1,
                                    allow_unused=True, materialize_grads=True)  # towers' unused heads: 0
            grads[name].append(torch.cat([x.flatten() for x in g]).double().cpu())

    for key in args.by_token:  # the groups' gradients add up to the whole's, episode by episode
        split = sum(torch.stack(grads[f"{key}@{group}"]) for group in groups)
        whole = torch.stack(grads[key])
        assert (split - whole).norm() <= 1e-5 * whole.norm(), key  # fp32 rounding only

    gen = torch.Generator().manual_seed(args.seed)
    results = {"args": asdict(args), "checkpoint_info": {k: info[k] for k in ("vla_path", "iteration", "global_step")},
               "rollout_success_once": successes.any(0).float().mean().item(), "steps_in_loss": int(n),
               "trainable_parameters": n_lora, "rollout_s": rollout_s,
               **({"state_critic_explained_variance": state_ev} if args.state_critic_folds > 1 else {}),
               "trace_sigma_per": "episode" if args.group_size == 1 else f"group of {args.group_size} episodes"}
    if args.vision:
        results["vision_parameters"] = sum(p.numel() for p in params) - n_lora
    lora_rows, grams = {}, {}  # per advantage: (M, LoRA parameters) and their Gram matrix, for `cross` below
    for key, rows in grads.items():
        h = torch.stack(rows)  # (M, parameters)
        lora_rows[key] = h[:, :n_lora]
        lora = grams[key] = lora_rows[key] @ lora_rows[key].T  # (M, M) Gram matrices, per parameter group
        results[key] = estimate(lora, args.group_size, args.splits, gen)
        if args.vision:
            vision = h[:, n_lora:] @ h[:, n_lora:].T
            results[f"{key}#vision"] = estimate(vision, args.group_size, args.splits, gen)
            results[f"{key}#all"] = estimate(lora + vision, args.group_size, args.splits, gen)
    if args.group_size == 1:  # which way each advantage points, pair by pair (over episodes: not for groups)
        keys = [key for key in advantages if key != "grpo"]
        results["cross"] = {f"{a}|{b}": cross_cosines(lora_rows[a] @ lora_rows[b].T, grams[a], grams[b], args.splits, gen)
                            for i, a in enumerate(keys) for b in keys[i + 1 :]}
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main(tyro.cli(Args))
