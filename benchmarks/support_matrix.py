"""The support matrix: every registered method on every architecture of
``cnnlens.evaluation.support_archs.ARCHS``; writes ``docs/support.md`` and
``docs/support.json``.

    python benchmarks/support_matrix.py [--archs swin_t,timm/levit_128s] [--threads 1]

Each cell is a map, a refusal (``MethodError``) or a failure (anything else, a NaN, a
constant map, a map off the input grid); see ``cnnlens.evaluation.support``. With
``--archs`` only those rows are re-run and the others are kept from the existing JSON.
``tests/test_support_matrix.py`` runs the same cells and fails when they disagree with
the JSON (re-run this script then), and when the page is not what the JSON gives.
Takes about 2.5 minutes on one thread (Score-CAM on the 768-channel models is half of it).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

DOCS = common.REPO_ROOT / "docs"


def versions() -> dict[str, str]:
    import timm
    import torch
    import torchvision

    out = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    out["timm"] = timm.__version__
    try:
        import transformers

        out["transformers"] = transformers.__version__
    except ImportError:
        pass
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="", help="comma-separated rows to re-run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", type=Path, default=DOCS / "support.json")
    parser.add_argument("--out", type=Path, default=DOCS / "support.md")
    args = parser.parse_args(argv)

    common.import_cnnlens()
    import torch

    from cnnlens.core.atomic import write_text_atomic
    from cnnlens.evaluation import support
    from cnnlens.evaluation.support_archs import ARCHS, build
    from cnnlens.methods import method_names

    torch.set_num_threads(args.threads)
    wanted = [a for a in args.archs.split(",") if a]
    unknown = sorted(set(wanted) - {a.name for a in ARCHS})
    if unknown:
        parser.error(f"unknown architectures {', '.join(unknown)}")
    kept: list = []
    if wanted and args.json.is_file():
        kept = [c for c in support.from_json(args.json.read_text())[0] if c.arch not in wanted]
    cells = []
    start = time.perf_counter()
    for a in ARCHS:
        if wanted and a.name not in wanted:
            continue
        model, x = build(a)
        row = [support.run_cell(model, x, a.name, m) for m in method_names()]
        cells += row
        took = sum(c.seconds for c in row)
        marks = "".join({"map": ".", "refused": "r"}.get(c.kind, "F") for c in row)
        print(f"{a.name:28s} {took:6.1f}s  {marks}", flush=True)
    order = {a.name: i for i, a in enumerate(ARCHS)}
    cells = sorted(kept + cells, key=lambda c: (order.get(c.arch, len(order)), c.method))
    meta = {
        "versions": versions(),
        "sizes": {a.name: a.size for a in ARCHS},
        "fast": support.FAST,
        "target": "top class" if support.TARGET is None else support.TARGET,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s)",
    }
    write_text_atomic(args.json, support.to_json(cells, meta))
    write_text_atomic(args.out, support.markdown(cells, meta))
    share = support.share_of_maps(cells)
    print(f"{share:.1%} of {len(cells)} cells give a map ({time.perf_counter() - start:.0f} s)")
    for c in cells:
        if c.kind == "failure":
            print(f"FAILURE {c.arch} / {c.method}: {c.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
