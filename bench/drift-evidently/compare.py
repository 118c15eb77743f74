"""Trestle's drift figures next to Evidently's on the same synthetic windows.

Seeded windows: pairs with a known shift and null pairs (both halves drawn from one
distribution), for numbers binned into Sturges bins, numbers with few distinct values
(one category each), floats, and texts. Evidently's PSI, normed Wasserstein and text
domain classifier (ROC AUC) are computed with its own stat tests; Trestle's with the
`drift_figures` example of the trestle-eval crate. Run from the repository root:

    bench/.venv-evidently/bin/python bench/drift-evidently/compare.py

(see README.md beside this file for the venv).
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from evidently.legacy.calculations.stattests import psi_stat_test, wasserstein_stat_test
from evidently.legacy.core import ColumnType
from evidently.legacy.utils.data_drift_utils import calculate_text_drift_score

ROOT = Path(__file__).resolve().parents[2]
N = 2000
THRESHOLD = 0.1


def numbers():
    rng = np.random.default_rng(20241126)

    def lognormal_ints(median, sigma, n=N):
        return np.rint(rng.lognormal(np.log(median), sigma, n)).astype(np.int64)

    def normal_ints(mean, sd, n=N):
        return np.rint(rng.normal(mean, sd, n)).astype(np.int64)

    def few(probs, n=N):
        return rng.choice(np.arange(1, len(probs) + 1), size=n, p=probs).astype(np.int64)

    even = np.full(12, 1 / 12)
    skew = np.array([3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1], dtype=float)
    skew /= skew.sum()
    ref_len = lognormal_ints(80, 0.6)
    ref_tok = normal_ints(300, 60)
    ref_few = few(even)
    ref_lat = rng.normal(100.0, 15.0, N)
    return [
        ("message length, null", ref_len, lognormal_ints(80, 0.6)),
        ("message length, +25%", ref_len, lognormal_ints(100, 0.6)),
        ("prompt tokens, null", ref_tok, normal_ints(300, 60)),
        ("prompt tokens, +10%", ref_tok, normal_ints(330, 60)),
        ("12 categories, null", ref_few, few(even)),
        ("12 categories, skewed", ref_few, few(skew)),
        ("latency (float), null", ref_lat, rng.normal(100.0, 15.0, N)),
        ("latency (float), +4%", ref_lat, rng.normal(104.0, 15.0, N)),
        ("small windows (60), null", lognormal_ints(80, 0.6, 60), lognormal_ints(80, 0.6, 60)),
    ]


SHIPPING = ["where is my parcel", "my order has not arrived", "tracking number for my delivery",
            "when will the package ship", "the courier lost my box", "delivery is late again"]
BILLING = ["refund my payment", "charged twice on my card", "the invoice is wrong",
           "cancel my subscription billing", "update my credit card", "why was I billed"]
EXTRAS = ["please", "today", "urgent", "thanks", "hello", "again", "now", "quickly"]


def texts():
    rng = np.random.default_rng(7)

    def draw(n, billing_share):
        out = []
        for _ in range(n):
            pool = BILLING if rng.random() < billing_share else SHIPPING
            out.append(f"{pool[rng.integers(len(pool))]} {EXTRAS[rng.integers(len(EXTRAS))]}")
        return out

    ref = draw(1000, 0.2)
    return [
        ("support topics, null", ref, draw(1000, 0.2)),
        ("support topics, billing 20% -> 50%", ref, draw(1000, 0.5)),
    ]


def evidently_numbers(ref, cur):
    r, c = pd.Series(ref), pd.Series(cur)
    psi = psi_stat_test(r, c, ColumnType.Numerical, THRESHOLD).drift_score
    wd = wasserstein_stat_test(r, c, ColumnType.Numerical, THRESHOLD).drift_score
    return float(psi), float(wd)


def evidently_text(ref, cur):
    auc, drifted = calculate_text_drift_score(pd.Series(ref), pd.Series(cur), bootstrap=True, p_value=0.05)
    return float(auc), bool(drifted)


def trestle(nums, txts):
    payload = {
        "numbers": [{"name": n, "reference": r.tolist(), "current": c.tolist()} for n, r, c in nums],
        "texts": [{"name": n, "reference": r, "current": c} for n, r, c in txts],
    }
    with tempfile.TemporaryFile("w+") as f:
        json.dump(payload, f)
        f.seek(0)
        out = subprocess.run(
            ["cargo", "run", "-q", "-p", "trestle-eval", "--example", "drift_figures"],
            stdin=f, capture_output=True, text=True, cwd=ROOT, check=True,
        )
    return json.loads(out.stdout)


def main():
    nums, txts = numbers(), texts()
    ours = trestle(nums, txts)
    print(f"{'pair':<30} {'PSI evidently':>14} {'PSI trestle':>12} {'W1n evidently':>14} {'W1n trestle':>12}"
          "  drift: Evidently (threshold 0.1) / Trestle report (+ permutation check)")
    worst = 0.0
    for (name, ref, cur), t in zip(nums, ours["numbers"]):
        psi, wd = evidently_numbers(ref, cur)
        worst = max(worst, abs(psi - t["psi"]), abs(wd - t["wasserstein_normed"]))
        ev = lambda v: "drift" if v >= THRESHOLD else "-"
        tr = lambda d: "drift" if d else "-"
        print(f"{name:<30} {psi:>14.6f} {t['psi']:>12.6f} {wd:>14.6f} {t['wasserstein_normed']:>12.6f}"
              f"  PSI {ev(psi)}/{tr(t['psi_drifted'])}, W1n {ev(wd)}/{tr(t['wasserstein_drifted'])}")
    print(f"largest difference: {worst:.2e}")
    print()
    print(f"{'text pair':<36} {'AUC evidently':>14} {'drift':>6} {'AUC trestle':>12} {'random p95':>11} {'drift':>6}")
    for (name, ref, cur), t in zip(txts, ours["texts"]):
        auc, drifted = evidently_text(ref, cur)
        ours_drift = t["auc"] >= 0.55 and t["auc"] > t["random_p95"]
        print(f"{name:<36} {auc:>14.3f} {str(drifted):>6} {t['auc']:>12.3f} {t['random_p95']:>11.3f} {str(ours_drift):>6}")
    return 0 if worst < 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
