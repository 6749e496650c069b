#!/usr/bin/env python
"""How closely ``sketchvae.data.formats.simplify_drawing`` reproduces Google's simplified drawings.

For every class in the raw Quick, Draw! folder, raw drawings are matched to simplified ones by
``key_id``; each raw drawing is converted with ``simplify_drawing`` (align top-left, uniform
scale to 255, resample 1 px, RDP 2.0, round) and compared with Google's simplified version:

* matches, and the fraction reproduced exactly (every stroke, every point);
* point counts: ratio converted / official (mean, median, fraction exactly equal), stroke counts;
* shape distance in the 0..255 frame: the mean symmetric nearest-point distance between the two
  drawings (both resampled at 1 px along their strokes, so vertex choice does not matter),
  median / 90th / 99th percentile / max over drawings; and the same on the vertices only;
* for drawings with equal point counts that are not exact: the largest coordinate difference.

    python scripts/audit_raw_conversion.py
    python scripts/audit_raw_conversion.py --raw DIR --simplified DIR --limit 50 --worst 5

Default folders: ``../shared/data/quickdraw/{raw_subset_per_class, simplified_first25_per_class}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sketchvae.data.formats import _resample, simplify_drawing  # noqa: E402

SHARED_QD = REPO.parent / "shared" / "data" / "quickdraw"


def read_drawings(path: Path, raw: bool) -> dict[str, list[np.ndarray]]:
    """key_id -> list of (k, 2) float polylines."""
    out = {}
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            obj = json.loads(line)
            polys = [np.asarray([s[0], s[1]], dtype=np.float64).T for s in obj["drawing"]]
            out[str(obj["key_id"])] = polys
    return out


def dense(polys) -> np.ndarray:
    return np.concatenate([_resample(np.asarray(p, np.float64), 1.0) for p in polys if len(p)])


def sym_nearest(a: np.ndarray, b: np.ndarray) -> float:
    """Mean symmetric nearest-point distance between two point sets (k, 2)."""
    from scipy.spatial import cKDTree

    da, _ = cKDTree(b).query(a)
    db, _ = cKDTree(a).query(b)
    return float((da.mean() + db.mean()) / 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--raw", type=Path, default=SHARED_QD / "raw_subset_per_class")
    ap.add_argument("--simplified", type=Path, default=SHARED_QD / "simplified_first25_per_class")
    ap.add_argument("--limit", type=int, default=0, help="only the first N classes (0 = all)")
    ap.add_argument("--worst", type=int, default=5, help="print the N drawings with the largest distance")
    ap.add_argument("--json", type=Path, help="write the summary numbers to this file")
    args = ap.parse_args(argv)
    if not args.raw.is_dir() or not args.simplified.is_dir():
        print(f"raw folder {args.raw} or simplified folder {args.simplified} not found", file=sys.stderr)
        return 2

    raw_files = sorted(args.raw.glob("*.ndjson"))
    if args.limit:
        raw_files = raw_files[:args.limit]
    n_raw = n_classes = 0
    exact = same_count = same_strokes = 0
    ratios, dists, vdists, maxdiff = [], [], [], []
    worst = []
    t_convert = 0.0
    for rf in raw_files:
        sf = args.simplified / rf.name
        raw = read_drawings(rf, True)
        n_raw += len(raw)
        if not sf.exists():
            continue
        simp = read_drawings(sf, False)
        common = [k for k in raw if k in simp]
        if common:
            n_classes += 1
        for k in common:
            t0 = time.perf_counter()
            conv = simplify_drawing(raw[k])
            t_convert += time.perf_counter() - t0
            off = [np.asarray(p).astype(np.int64) for p in simp[k]]
            nc, no = sum(map(len, conv)), sum(map(len, off))
            ratios.append(nc / no)
            same_count += nc == no
            same_strokes += len(conv) == len(off)
            is_exact = len(conv) == len(off) and all(a.shape == b.shape and (a == b).all() for a, b in zip(conv, off))
            exact += is_exact
            d = sym_nearest(dense(conv), dense(off))
            dists.append(d)
            vdists.append(sym_nearest(np.concatenate(conv).astype(float), np.concatenate(off).astype(float)))
            if nc == no and not is_exact and len(conv) == len(off) and all(len(a) == len(b) for a, b in zip(conv, off)):
                maxdiff.append(int(max(np.abs(a - b).max() for a, b in zip(conv, off))))
            worst.append((d, rf.stem, k, nc, no))
    n = len(ratios)
    if not n:
        print("no raw/simplified pairs found", file=sys.stderr)
        return 1
    ratios, dists, vdists = map(np.asarray, (ratios, dists, vdists))
    summary = {
        "raw_drawings": n_raw, "classes_with_pairs": n_classes, "matched_pairs": n,
        "exact": exact, "exact_frac": exact / n,
        "point_ratio_mean": float(ratios.mean()), "point_ratio_median": float(np.median(ratios)),
        "point_count_equal_frac": same_count / n, "stroke_count_equal_frac": same_strokes / n,
        "dist_mean": float(dists.mean()), "dist_median": float(np.median(dists)),
        "dist_p90": float(np.percentile(dists, 90)), "dist_p99": float(np.percentile(dists, 99)),
        "dist_max": float(dists.max()),
        "vertex_dist_median": float(np.median(vdists)), "vertex_dist_p90": float(np.percentile(vdists, 90)),
        "equal_count_not_exact": len(maxdiff),
        "equal_count_not_exact_maxdiff_hist": {str(v): int(c) for v, c in zip(*np.unique(maxdiff, return_counts=True))},
        "convert_drawings_per_s": n / t_convert if t_convert else None,
    }
    print(f"raw drawings read: {n_raw} in {len(raw_files)} classes; matched to simplified by key_id: {n} "
          f"({n_classes} classes)")
    print(f"exactly reproduced (every stroke and point): {exact} = {exact / n:.1%}")
    print(f"point count converted/official: mean {ratios.mean():.4f}, median {np.median(ratios):.4f}, "
          f"equal {same_count / n:.1%} (min {ratios.min():.3f}, max {ratios.max():.3f}); "
          f"stroke count equal {same_strokes / n:.1%}")
    print(f"shape distance (mean symmetric nearest-point, px in 0..255, 1 px resampled): mean {dists.mean():.3f}, "
          f"median {np.median(dists):.3f}, p90 {np.percentile(dists, 90):.3f}, p99 {np.percentile(dists, 99):.3f}, "
          f"max {dists.max():.3f}")
    print(f"vertex-only distance: median {np.median(vdists):.3f}, p90 {np.percentile(vdists, 90):.3f}")
    if maxdiff:
        print(f"equal point counts but not exact: {len(maxdiff)} drawings; largest coordinate difference "
              f"histogram {summary['equal_count_not_exact_maxdiff_hist']}")
    print(f"conversion speed: {summary['convert_drawings_per_s']:.0f} drawings/s")
    if args.worst:
        print(f"worst {args.worst} by shape distance (class, key_id, points converted/official, distance):")
        for d, cls, k, nc, no in sorted(worst, reverse=True)[:args.worst]:
            print(f"  {cls} {k}: {nc}/{no} points, {d:.2f} px")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
