"""What a trained OPPO model's context carries (a diagnostic, not a test).

For one saved model and its dataset it measures, over segments drawn from the dataset:

- how well the encodings order segments by return: the correlation between
  ``cos(I(τ), z*)`` and the segment's true return;
- how much the policy relies on the segment-specific content of ``z``: the imitation error
  (the HIM loss, on unit actions) with each segment's own encoding, with the encodings shuffled
  across segments, and with ``z*`` for every segment;
- what acting with other fixed contexts scores in the env: ``z*``, the mean encoding of the
  10% best segments, of the 10% worst, and the encoding of the single best segment.

If the policy does much better with a segment's own ``z`` than with a shuffled one, ``z``
tells it *which actions* the segment takes (the hindsight part of HIM), not only how good the
segment is; one fixed context for a whole episode then asks for one segment's actions
everywhere. Example::

    python benchmarks/oppo_context_probe.py results/oppo/runs/OPPO__mdpo_hopper_medium-replay-v0__s0/final_model.zip \\
        --dataset mdpo/hopper/medium-replay-v0 --root runs/datasets --out results/oppo/probe
"""  # noqa: E501

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

import numpy as np
import torch

from mdpo.core.utils import code_version
from mdpo.offline.dataset import OfflineDataset
from mdpo.offline.oppo import OPPO, masked_mse
from mdpo.offline.preferences import Segments


def subset(segments: Segments, keep: torch.Tensor) -> Segments:
    """The segments at the indices (or flags) ``keep``."""
    fields = ("observations", "actions", "timesteps", "mask", "returns")
    return Segments(**{name: getattr(segments, name)[keep] for name in fields})


def probe(agent: OPPO, n_segments: int, episodes: int, seed: int) -> dict:
    """The measurements of the module docstring for ``agent`` (its dataset set)."""
    agent.model.eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        segments = agent.sampler.gather(*agent.sampler.sample(n_segments, generator))
        z = agent.encode(segments)
        z_star = agent.z_star
        returns = segments.returns
        cosine = torch.nn.functional.cosine_similarity(z, z_star[None], dim=1)
        shuffled = z[torch.randperm(len(z), generator=generator)]

        def him(seg: Segments, context: torch.Tensor) -> float:
            return masked_mse(agent.policy_actions(seg, context), seg.actions, seg.mask).item()

        order = torch.argsort(returns)
        tenth = max(1, n_segments // 10)
        top, bottom = order[-tenth:], order[:tenth]
        top_segments = subset(segments, top)
        result = {
            "z_star_norm": float(z_star.norm()),
            "encoding_norm_mean": float(z.norm(dim=1).mean()),
            "corr_cos_z_star_return": float(np.corrcoef(cosine.numpy(), returns.numpy())[0, 1]),
            "him_own_z": him(segments, z),
            "him_shuffled_z": him(segments, shuffled),
            "him_z_star": him(segments, z_star.expand_as(z)),
            "him_top10_own_z": him(top_segments, z[top]),
            "him_top10_z_star": him(top_segments, z_star.expand_as(z[top])),
        }
    contexts = {
        "z_star": z_star,
        "mean_top10_encoding": z[top].mean(dim=0),
        "mean_bottom10_encoding": z[bottom].mean(dim=0),
        "best_segment_encoding": z[order[-1]],
    }
    scores = {}
    for name, context in contexts.items():
        agent.model.z_star.data.copy_(context)
        evaluation = agent.evaluate(episodes, seed=1000)
        scores[name] = evaluation.get("mean_normalized", evaluation["mean_return"])
        print(f"acting with {name}: {scores[name]:.1f}", flush=True)
    agent.model.z_star.data.copy_(z_star)
    result["scores"] = scores
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="an OPPO final_model.zip")
    parser.add_argument("--dataset", required=True, help="its dataset id or folder")
    parser.add_argument("--root", help="Minari datasets folder")
    parser.add_argument("--segments", type=int, default=4000, help="segments drawn")
    parser.add_argument("--episodes", type=int, default=5, help="evaluation episodes a context")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="folder for <model's run>.json")
    args = parser.parse_args()
    dataset = OfflineDataset.load(args.dataset, args.root)
    agent = OPPO.load(args.model, env=dataset, device="cpu")
    result = probe(agent, args.segments, args.episodes, args.seed)
    result.update(
        model=args.model, command=f"python {shlex.join(sys.argv)}", code_version=code_version()
    )
    print(json.dumps({k: v for k, v in result.items() if k != "command"}, indent=1))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        name = os.path.basename(os.path.dirname(os.path.abspath(args.model)))
        with open(os.path.join(args.out, f"{name}.json"), "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
