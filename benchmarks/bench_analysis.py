"""Dataset analysis: indexing throughput vs plain batched inference; 2-D map times.

Indexing: a synthetic folder of JPEGs (random crops of the scikit-image photos, 320x240) is
processed three ways, interleaved (see common.py):

* ``forward``: the model alone on ready-made tensors, batch after batch (upper bound);
* ``plain``: a plain loop, DataLoader (decode + preprocess) then forward, nothing stored;
* ``index``: ``cl.analysis.build_index`` on the same folder and settings (a fresh folder
  each round, removed untimed), storing features, maxima, predictions and thumbnails.

Goal: ``index`` at least 90% of ``plain``'s throughput. Then PCA, t-SNE (openTSNE, FFT) and
UMAP of 1k and 10k synthetic 1280-d features (ten Gaussian clusters), each timed once.

    python benchmarks/bench_analysis.py --images 512
    python benchmarks/bench_analysis.py --images 10000 --repeats 1 --warmup 0   # the 10k run
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Contender  # noqa: E402


def make_folder(root: Path, n: int, seed: int = 0) -> Path:
    import numpy as np

    cl = common.import_cnnlens()
    photos = list(cl.sample_images(["chelsea", "coffee", "astronaut", "rocket"]).values())
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = photos[i % len(photos)]
        w, h = img.size
        x, y = int(rng.integers(0, w // 3)), int(rng.integers(0, h // 3))
        crop = img.crop((x, y, x + 2 * w // 3, y + 2 * h // 3)).resize((320, 240))
        crop.save(root / f"{i:06d}.jpg", quality=90)
    return root


def bench_index(args) -> dict:
    import torch
    from torch.utils.data import DataLoader

    cl = common.import_cnnlens()
    from cnnlens.analysis import build_index
    from cnnlens.core.hooks import preserved
    from cnnlens.io import list_images, load_image

    model = cl.load_model()
    tmp = Path(tempfile.mkdtemp(prefix="cnnlens-bench-"))
    folder = make_folder(tmp / "data", args.images)
    files = list_images(folder)
    spec = model.preprocess_spec

    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            return spec.to_tensor(spec.geometry(load_image(files[i])))

    batches = [torch.randn(min(args.batch_size, len(files) - i), 3, 224, 224)
               for i in range(0, len(files), args.batch_size)]  # fmt: skip

    def forward():
        with preserved(model.net), torch.inference_mode():
            for x in batches:
                model.net(x)

    def plain():
        loader = DataLoader(Plain(), batch_size=args.batch_size, num_workers=args.workers)
        with preserved(model.net), torch.inference_mode():
            for x in loader:
                model.net(x)

    out = tmp / "index"

    def index():
        build_index(model, folder, out, args.layers.split(","), batch_size=args.batch_size,
                    num_workers=args.workers)  # fmt: skip

    contenders = [
        Contender("forward", forward),
        Contender("plain", plain),
        Contender("index", index, setup=lambda: shutil.rmtree(out, ignore_errors=True)),
    ]
    try:
        timings = common.run_interleaved(contenders, warmup=args.warmup, repeats=args.repeats)
        common.print_table(timings, reference="plain", title=f"indexing {len(files)} images")
        per = {k: len(files) / t.median for k, t in timings.items()}
        print("images/s: " + ", ".join(f"{k} {v:.1f}" for k, v in per.items()))
        share = per["index"] / per["plain"]
        print(f"index / plain throughput: {share:.3f} {common.verdict(share >= 0.9)}")
        disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        print(f"index size on disk: {disk / len(files) / 1024:.1f} KiB per image "
              f"-> {disk / len(files) * 1e5 / 2**30:.2f} GiB for 100k images")  # fmt: skip
        return {"timings": timings, "images_per_s": per, "bytes_per_image": disk / len(files)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_maps(args) -> dict:
    import numpy as np

    common.import_cnnlens()
    from cnnlens.analysis import embed

    rng = np.random.default_rng(0)
    for method in args.methods:  # untimed: imports and numba compilation happen once
        embed(rng.normal(size=(300, 64)).astype(np.float32), method, seed=0, n_jobs=args.jobs)
    results = {}
    for n in args.points:
        centres = rng.normal(0, 4, (10, 1280))
        x = (centres[rng.integers(0, 10, n)] + rng.normal(0, 1, (n, 1280))).astype(np.float32)
        for method in args.methods:
            start = time.perf_counter()
            embed(x, method, seed=0, n_jobs=args.jobs)
            seconds = time.perf_counter() - start
            results[f"{method}-{n}"] = seconds
            print(f"{method:>5} {n:>6} points: {seconds:6.1f} s", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0], warmup=1, repeats=3)
    parser.add_argument("--images", type=int, default=512, help="synthetic folder size")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    parser.add_argument("--layers", default="blocks.5,conv_head")
    parser.add_argument("--points", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--methods", nargs="*", default=["pca", "tsne", "umap"])
    parser.add_argument("--jobs", type=int, default=2, help="threads for t-SNE / UMAP")
    parser.add_argument("--skip-index", action="store_true")
    parser.add_argument("--skip-maps", action="store_true")
    args = parser.parse_args(argv)
    info = common.machine_info()
    common.print_machine(info)
    payload = {"machine": info, "args": vars(args)}
    if not args.skip_index:
        payload["index"] = bench_index(args)
    if not args.skip_maps:
        payload["maps"] = bench_maps(args)
    if args.json:
        common.write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
