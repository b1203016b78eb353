"""Where PPO's advantage goes under three return designs, on simulated episodes (CPU, seconds).

    python bench/credit_assignment.py --out bench/results/credit_assignment.json

Episodes of the learning experiment's shape: 80 steps, success with probability `p_success` at a step drawn
uniformly from [first, last], the cube staying on the towel afterwards (the sparse reward is the per-step
success indicator). The critic is the best one that cannot see time: one value per state class ("before
success", "in success"), the mean discounted return over its visits. GAE (gamma 0.99, lambda 0.95) as in
`ppo_openvla.compute_gae` (imported), for:
- `terminal_time_limit`: per-step reward, the time limit terminal (the scripts' old default);
- `bootstrap_time_limit`: per-step reward, the time limit bootstrapped from V(last observation);
- `success_ends_episode`: reward 1 at the first success, which ends the episode (later steps leave the loss);
  episodes without success bootstrap at the time limit (the new default, `--success-ends-episode
  --bootstrap-time-limit`).
Each design runs with an exact time-blind critic and with one whose error is `critic_noise` of the returns'
std (a value head's approximation error grows with the range it must fit). Reported per design: the share of the summed squared advantage that falls on steps after the first success
(where the action hardly matters), the mean advantage of the last step of a successful episode, and the
separation of successful from failed episodes before the success: (mean A of their pre-success steps
minus mean A of failed episodes' steps) / std of A over all steps in the loss, the signal PPO learns from.
"""

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ppo_openvla import compute_gae  # noqa: E402  (the script's own GAE, so the bench measures our code)


@dataclass
class Args:
    episodes: int = 20000
    """simulated episodes"""
    steps: int = 80
    """episode length"""
    p_success: float = 0.33
    """probability that an episode succeeds"""
    first: int = 20
    """earliest step of the first success"""
    last: int = 50
    """latest step of the first success"""
    gamma: float = 0.99
    """discount factor (PPO's default)"""
    gae_lambda: float = 0.95
    """GAE lambda (PPO's default)"""
    critic_noise: float = 0.1
    """also run with a critic whose error has this std relative to the returns' std (function approximation)"""
    seed: int = 0
    """random seed of the simulated episodes and critic errors"""
    out: str = ""
    """write the results as JSON here (empty: print only)"""


def discounted(rewards, terminals, last_values, gamma):
    out, nxt = torch.zeros_like(rewards), last_values
    for t in reversed(range(rewards.shape[0])):
        out[t] = nxt = rewards[t] + gamma * nxt * (1.0 - terminals[t].float())
    return out


def simulate(args: Args, critic_noise: float) -> dict:
    g = torch.Generator().manual_seed(args.seed)
    T, N = args.steps, args.episodes
    succeeds = torch.rand(N, generator=g) < args.p_success
    k = torch.randint(args.first, args.last + 1, (N,), generator=g)  # first success step
    t = torch.arange(T)[:, None]
    in_success = succeeds & (t >= k)  # (T, N)
    first_success = succeeds & (t == k)
    last_obs_in_success = succeeds  # the state after the last step
    results = {}
    for design in ("terminal_time_limit", "bootstrap_time_limit", "success_ends_episode"):
        ends = design == "success_ends_episode"
        rewards = (first_success if ends else in_success).float()
        terminals = first_success if ends else torch.zeros_like(in_success)
        alive = ~(in_success & ~first_success) if ends else torch.ones_like(in_success)
        bootstrap = design != "terminal_time_limit"
        # the time-blind critic: fit one value per state class to the returns it produces (fixed point)
        v = torch.zeros(2)  # [before success, in success]
        for _ in range(200):
            values = torch.where(in_success, v[1], v[0])
            last_values = torch.where(last_obs_in_success, v[1], v[0]) if bootstrap else torch.zeros(N)
            if ends:
                last_values = torch.where(succeeds, 0.0, last_values)  # ended episodes have nothing after
            returns = discounted(rewards, terminals, last_values, args.gamma)
            new = torch.stack([returns[alive & ~in_success].mean(),
                               returns[alive & in_success].mean() if (alive & in_success).any() else torch.tensor(0.0)])
            if torch.allclose(new, v, atol=1e-6):
                break
            v = new
        values = torch.where(in_success, v[1], v[0])
        noise = critic_noise * returns[alive].std()
        values = values + noise * torch.randn(values.shape, generator=g)
        last_values = last_values + noise * torch.randn(last_values.shape, generator=g) * (last_values != 0)
        adv, _ = compute_gae(rewards, values, terminals, last_values, args.gamma, args.gae_lambda)
        a2 = (adv**2 * alive).sum()
        post = in_success & ~first_success & alive
        pre_success = alive & ~in_success & succeeds
        failed = alive & ~succeeds
        std = adv[alive].std()
        results[design] = {
            "value_before_success": v[0].item(), "value_in_success": v[1].item(),
            "share_of_squared_advantage_after_success": (adv**2 * post).sum().item() / a2.item(),
            "mean_advantage_last_step_of_successes": adv[-1][succeeds & alive[-1]].mean().item()
            if (succeeds & alive[-1]).any() else None,
            "separation_success_vs_failure_before_success": ((adv[pre_success].mean() - adv[failed].mean()) / std).item(),
        }
    return results


if __name__ == "__main__":
    args = tyro.cli(Args)
    results = {f"critic_noise_{noise:g}": simulate(args, noise) for noise in (0.0, args.critic_noise)}
    for name, by_design in results.items():
        for design, r in by_design.items():
            print(f"{name} {design:22s} " + "  ".join(f"{k} {'-' if v is None else f'{v:+.3f}'}" for k, v in r.items()))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"settings": vars(args), "results": results}, indent=1))
