"""Run a small αNAS search from Python and use what it found.

    python examples/search_from_python.py                 # about 5 minutes on 2 CPU cores
    python examples/search_from_python.py --candidates 2 --steps 10 --subset 600   # a smoke run

It searches examples/my_model.py on Fashion-MNIST, prints the Pareto front, then loads the best
model the way a user's deployment would: its standalone model.py and a weights_only state dict.
"""

import argparse
import runpy
from pathlib import Path

import torch

import alphac

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/example")
    parser.add_argument("--candidates", type=int, default=6)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--subset", type=int, default=3000)
    parser.add_argument("--val-images", type=int, default=None, help="default: all held out")
    parser.add_argument("--executor", default="local", help="local, inline or ray")
    args = parser.parse_args()

    def on_event(kind: str, info: dict) -> None:
        if kind == "done":
            print(f"  #{info['id']}: val {100 * info['val_accuracy']:.1f}%, "
                  f"{info['params']:,} params")

    result = alphac.optimize(HERE / "my_model.py", target="fashion-mnist", out=args.out,
                             candidates=args.candidates, steps=args.steps, subset=args.subset,
                             val_images=args.val_images, executor=args.executor, device="cpu",
                             on_event=on_event)
    seed = result.seed_model
    print(f"seed: {seed['params']:,} params, test {100 * seed['test_accuracy']:.1f}%")
    for row in result.pareto:
        print(f"pareto #{row['id']}: {row['params']:,} params, "
              f"test {100 * row['test_accuracy']:.1f}%")

    best = result.best_dir
    model = runpy.run_path(str(best / "model.py"))["build_model"]()
    model.load_state_dict(torch.load(best / "weights.pt", weights_only=True))
    logits = model.eval()(torch.randn(1, 1, 28, 28))
    print(f"best #{result.best['id']}: {result.best['params']:,} params "
          f"({result.best['params'] / seed['params']:.0%} of the seed), output {tuple(logits.shape)}")


if __name__ == "__main__":
    main()
