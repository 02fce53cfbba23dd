"""RISE: convergence at the default number of masks, and speed against plain inference.

    python benchmarks/bench_rise.py [--masks 4000] [--speed-masks 1000] [--repeats 3]
                                    [--skip-convergence] [--skip-speed] [--json out.json]

Bundled EfficientNet-Lite0, one 224x224 image (``chelsea``), class 285, RISE
defaults (7x7 grid, keep 0.5, softmax probability, zero baseline).

1. Convergence: ``cl.attribute(..., "rise", masks=N, seed=0)`` against
   ``masks=2N, seed=1`` (independent masks); Pearson correlation of the two
   maps over all pixels. Acceptance target: >= 0.95 at the default N = 4000.
   ``--extra-seeds K`` adds K more N-mask maps (seeds 2, 3, ...) to show the
   seed-to-seed spread of the same quantity. The maps use the default
   per-pixel normalisation (``normalize="pixel"``); a diagnostic that costs no
   forward pass repeats the correlation for the paper's 1/(N·p) form, which is
   the same map times ``mean_i M_i(u) / p``.
2. Speed: RISE with ``--speed-masks`` masks at the default batch size against
   the same masked inputs, precomputed (not timed), pushed through the model as
   plain batched inference under ``torch.inference_mode`` with the same batch
   size, (a) on the model as it is (contiguous inputs) and (b) on the
   channels-last copy RISE itself uses. RISE also runs one unmasked pass to
   resolve the target; the reference does not. Acceptance target: RISE <= 1.1x
   (a); the ratio to (b) is RISE's own overhead (mask generation, blending,
   accumulation). Precomputed inputs take speed-masks x 3 x 224 x 224 x 4 bytes
   per layout (600 MB each at 1000 masks), hence the default of 1000 masks:
   the per-pass overhead does not depend on N.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Contender  # noqa: E402

TARGET = 285
SPEED_TARGET = 1.1
CORR_TARGET = 0.95


def pearson(a, b) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0], warmup=1, repeats=3)
    parser.add_argument("--masks", type=int, default=4000, help="N for the convergence check")
    parser.add_argument(
        "--speed-masks", type=int, default=1000, help="masks in the speed comparison"
    )
    parser.add_argument("--extra-seeds", type=int, default=0, help="more N-mask maps (spread)")
    parser.add_argument("--skip-convergence", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args(argv)

    import torch

    cl, model, x = common.load_setup(args.image)
    import cnnlens.attribution.rise as rise_mod
    from cnnlens.core.tensors import default_batch_size, inference_copy

    net = model.net.eval()
    info = common.machine_info()
    common.print_machine(info)
    bs = default_batch_size(x)
    h, w = x.shape[-2:]
    print(f"model: {model.name}, input {tuple(x.shape)}, target {TARGET}, default batch_size {bs}")
    result: dict = {
        "benchmark": "rise",
        "machine": info,
        "config": {
            "model": model.name,
            "input_shape": list(x.shape),
            "target": TARGET,
            "masks": args.masks,
            "speed_masks": args.speed_masks,
            "batch_size": bs,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "image": args.image,
        },
    }
    ok = True

    def mean_mask(masks: int, seed: int):
        """mean_i M_i(u) of the masks RISE draws for (masks, seed) at this size."""
        cell = rise_mod.cell_size(h, w, 7)
        g, dy, dx = rise_mod.draw_grids(masks, 7, 0.5, cell, torch.Generator().manual_seed(seed))
        total = torch.zeros(h, w)
        for s in range(0, masks, 256):
            sl = slice(s, s + 256)
            total += rise_mod.upsample_masks(g[sl], dy[sl], dx[sl], (h, w), cell).sum(0)
        return total / masks

    if not args.skip_convergence:
        n = args.masks
        print(f"\nconvergence: N = {n} (seed 0) vs 2N = {2 * n} (seed 1)")
        maps = {}
        runs = [(n, 0), (2 * n, 1)] + [(n, 2 + k) for k in range(args.extra_seeds)]
        for masks, seed in runs:
            start = time.perf_counter()
            e = cl.attribute(model, x, "rise", target=TARGET, masks=masks, seed=seed)
            secs = time.perf_counter() - start
            maps[(masks, seed)] = e.maps[0, 0]
            m = e.maps[0, 0]
            print(
                f"  masks {masks:>6} seed {seed}: {secs:6.1f} s, "
                f"map mean {float(m.mean()):.4f}, min {float(m.min()):.4f}, "
                f"max {float(m.max()):.4f}"
            )
        r = pearson(maps[(n, 0)], maps[(2 * n, 1)])
        print(f"  Pearson r(N={n}, 2N={2 * n}) = {r:.4f}")
        # Diagnostic, no forward passes: the same maps in the paper's form, 1 / (N p)
        # instead of 1 / sum_i M_i(u). The difference is the sampling noise of
        # sum_i M_i(u) times the mean score.
        paper = {k: v * mean_mask(*k) / 0.5 for k, v in maps.items()}
        r_paper = pearson(paper[(n, 0)], paper[(2 * n, 1)])
        print(f"  diagnostic: Pearson r with the paper's 1 / (N p) normalisation = {r_paper:.4f}")
        extra = {}
        for k in range(args.extra_seeds):
            extra[f"N seed 0 vs N seed {2 + k}"] = pearson(maps[(n, 0)], maps[(n, 2 + k)])
            extra[f"2N seed 1 vs N seed {2 + k}"] = pearson(maps[(2 * n, 1)], maps[(n, 2 + k)])
        for name, v in extra.items():
            print(f"  Pearson {name}: {v:.4f}")
        met = r >= CORR_TARGET
        ok &= met
        print(f"target (r >= {CORR_TARGET} at N = {n}): {common.verdict(met)}")
        result["convergence"] = {
            "pearson_n_2n": r,
            "pearson_n_2n_paper_normalisation": r_paper,
            "extra": extra,
            "target_met": met,
        }

    if not args.skip_speed:
        m_count = args.speed_masks
        cell = rise_mod.cell_size(h, w, 7)
        grids, dy, dx = rise_mod.draw_grids(m_count, 7, 0.5, cell, torch.Generator().manual_seed(0))
        fast = inference_copy(net, x)
        plain_batches, cl_batches = [], []
        with torch.inference_mode():
            for s in range(0, m_count, bs):
                sl = slice(s, s + bs)
                m = rise_mod.upsample_masks(grids[sl], dy[sl], dx[sl], (h, w), cell)
                b = x * m.unsqueeze(1)  # zero baseline: b + (x - b) * M = x * M
                plain_batches.append(b.contiguous())
                cl_batches.append(b.contiguous(memory_format=torch.channels_last))
        gib = 2 * sum(b.numel() for b in plain_batches) * 4 / 2**30
        print(
            f"\nspeed: {m_count} masks, batch_size {bs}, "
            f"{len(plain_batches)} batches precomputed ({gib:.2f} GiB in two layouts)"
        )

        def plain(model_, batches):
            def fn():
                with torch.inference_mode():
                    for b in batches:
                        model_(b)

            return fn

        def ours():
            return cl.attribute(model, x, "rise", target=TARGET, masks=m_count, batch_size=bs)

        contenders = [
            Contender("cnnlens rise", ours),
            Contender("plain inference", plain(net, plain_batches)),
            Contender("plain channels-last copy", plain(fast, cl_batches)),
        ]
        timings = common.run_interleaved(contenders, warmup=args.warmup, repeats=args.repeats)
        common.print_table(
            timings,
            reference="plain inference",
            title=f"RISE vs its {m_count} forward passes (ratio column: median / plain inference)",
        )
        r_plain = common.ratio(timings, "cnnlens rise", "plain inference")
        r_cl = common.ratio(timings, "cnnlens rise", "plain channels-last copy")
        per_pass = timings["cnnlens rise"].median / (m_count + 1) * 1e3
        print(f"\nrise / plain inference (model as is)       = {r_plain:.3f}")
        print(f"rise / plain inference (channels-last copy) = {r_cl:.3f}")
        print(f"rise: {per_pass:.2f} ms per forward pass (N + 1 passes)")
        met = r_plain <= SPEED_TARGET
        ok &= met
        print(f"target (rise <= {SPEED_TARGET}x plain batched inference): {common.verdict(met)}")
        result["speed"] = {
            "timings": {k: v.as_dict() for k, v in timings.items()},
            "rise_over_plain": r_plain,
            "rise_over_plain_channels_last": r_cl,
            "ms_per_pass": per_pass,
            "target_met": met,
        }

    if args.json:
        common.write_json(args.json, result)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
