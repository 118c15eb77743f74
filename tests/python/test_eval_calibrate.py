"""`trestle eval calibrate` against scikit-learn: the same synthetic labels give the same
agreement and Cohen's kappa (plain, linear and quadratic weights), overall and per criterion."""

import json
import random
import subprocess
import tempfile
from pathlib import Path

import pytest
from sklearn.metrics import cohen_kappa_score, confusion_matrix

from conftest import BIN


def synthetic(seed: int, agree: float):
    """People's 1-5 scores on 300 answers x 2 criteria, and a judge that agrees with the
    person with probability `agree`, otherwise drifts a point or two (more often upward:
    judges are lenient)."""
    rng = random.Random(seed)
    human, judge = [], []
    for i in range(300):
        for criterion in ("accuracy", "tone"):
            h = rng.choices([1, 2, 3, 4, 5], weights=[1, 2, 3, 5, 4])[0]
            j = h if rng.random() < agree else min(5, max(1, h + rng.choice([-2, -1, 1, 1, 2])))
            category = "returns" if i % 3 else "billing"
            human.append({"case_id": f"c{i}", "criterion": criterion, "score": h, "rater": "ana", "category": category})
            judge.append({"id": f"c{i}", "criterion": criterion, "score": j, "rater": "judge"})
    return human, judge


def calibrate(tmp: Path, human, judge, weights: str):
    (tmp / "human.jsonl").write_text("".join(json.dumps(r) + "\n" for r in human))
    (tmp / "judge.jsonl").write_text("".join(json.dumps(r) + "\n" for r in judge))
    out = tmp / f"out-{weights}.json"
    p = subprocess.run(
        [BIN, "eval", "calibrate", "--judge", str(tmp / "judge.jsonl"), "--labels", str(tmp / "human.jsonl"),
         "--weights", weights, "--json", str(out), "--db", str(tmp / "e.db")],
        capture_output=True, text=True,
    )
    return p, json.loads(out.read_text())


@pytest.mark.parametrize("agree", [0.9, 0.6])
@pytest.mark.parametrize("weights", ["none", "linear", "quadratic"])
def test_kappa_matches_scikit_learn(agree, weights):
    tmp = Path(tempfile.mkdtemp(prefix="trestle-calib-"))
    human, judge = synthetic(11, agree)
    p, figures = calibrate(tmp, human, judge, weights)
    h = [r["score"] for r in human]
    j = [r["score"] for r in judge]
    sk_weights = None if weights == "none" else weights
    assert figures["overall"]["kappa"] == pytest.approx(cohen_kappa_score(h, j), abs=1e-9)
    assert figures["overall"]["weighted_kappa"] == pytest.approx(cohen_kappa_score(h, j, weights=sk_weights), abs=1e-9)
    assert figures["overall"]["agreement"] == pytest.approx(sum(a == b for a, b in zip(h, j)) / len(h), abs=1e-12)
    assert figures["overall"]["confusion"] == confusion_matrix(h, j, labels=[1, 2, 3, 4, 5]).tolist()
    for criterion in ("accuracy", "tone"):
        hc = [r["score"] for r in human if r["criterion"] == criterion]
        jc = [r["score"] for r, q in zip(judge, human) if q["criterion"] == criterion]
        assert figures["by_criterion"][criterion]["weighted_kappa"] == pytest.approx(
            cohen_kappa_score(hc, jc, weights=sk_weights), abs=1e-9)
    assert set(figures["by_category"]) == {"returns", "billing"}
    # The 85% agreement target: met by the close judge (exit 0), not by the loose one (exit 1).
    assert p.returncode == (0 if figures["overall"]["agreement"] >= 0.85 else 1), p.stdout + p.stderr
    assert ("NOT met" in p.stdout) == (figures["overall"]["agreement"] < 0.85)
