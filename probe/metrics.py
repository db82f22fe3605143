"""Pure functions of the metric spec (../shared/docs/metrics.md): pass@k, empirical support,
support classes and rates, answer entropy, unseen-support estimators, model-level summaries.

Everything is numpy float64, natural logarithms (nats), no I/O, no state.

A *record* (what `summarize` and `versus_reference` read) describes one (model, problem):

    {
        "problem_id": str,                # needed by versus_reference only
        "n": int,                         # samples drawn
        "c": int,                         # samples verified correct
        "answers": [                      # histogram of canonical answers over the n samples,
            {"answer": str, "count": int, "correct": bool},   # "NA" included, counts sum to n,
            ...                           # counts of correct answers sum to c
        ],
        "token_entropy": float,           # mean over this problem's samples, nats
    }

It is one row of a probe dir's problems.parquet with `answers` decoded from JSON.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

# --- pass@k


def pass_at_k(n, c, k: int) -> np.ndarray:
    """Unbiased pass@k = 1 - C(n-c, k) / C(n, k) per problem, vectorised over n and c.

    Computed as 1 - prod_{i=n-c+1..n} (1 - k/i): for each distinct n, one cumulative product
    R[j] = prod_{i=n-j+1..n} (1 - k/i) over j = 0..n, then pass@k = 1 - R[c]. The factor at
    i = k is exactly 0, so n - c < k gives exactly 1.0. Never forms a binomial coefficient.
    """
    n_arr = np.asarray(n)  # (problems,) or scalar
    c_arr = np.asarray(c)
    n_arr, c_arr = np.broadcast_arrays(n_arr, c_arr)
    if np.any(np.mod(n_arr, 1) != 0) or np.any(np.mod(c_arr, 1) != 0):
        raise ValueError("pass_at_k: n and c must be whole numbers")
    n_arr = n_arr.astype(np.int64)
    c_arr = c_arr.astype(np.int64)
    if isinstance(k, bool) or int(k) != k:
        raise ValueError(f"pass_at_k: k must be an integer, got {k!r}")
    k = int(k)
    if n_arr.size and np.any(n_arr < 1):
        raise ValueError(f"pass_at_k: n must be >= 1, got min n = {n_arr.min()}")
    if n_arr.size and (np.any(c_arr < 0) or np.any(c_arr > n_arr)):
        raise ValueError("pass_at_k: need 0 <= c <= n for every problem")
    if k < 1:
        raise ValueError(f"pass_at_k: k must be >= 1, got {k}")
    if n_arr.size and k > n_arr.min():
        raise ValueError(f"pass_at_k: k = {k} exceeds the budget n = {n_arr.min()}")

    result = np.empty(n_arr.shape, dtype=np.float64)
    for n_value in np.unique(n_arr):
        i = np.arange(n_value, 0, -1, dtype=np.float64)  # (n,) i = n, n-1, ..., 1
        remaining = np.concatenate(([1.0], np.cumprod(1.0 - k / i)))  # (n+1,) R[j]
        # Past i = k the factors are negative but the product is already exactly 0.
        remaining = np.maximum(remaining, 0.0)
        mask = n_arr == n_value
        result[mask] = 1.0 - remaining[c_arr[mask]]
    return result


def k_ladder(n: int) -> list[int]:
    """[1, 2, 4, ..., n]: powers of two up to n, with n appended when it is not one."""
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"k_ladder: n must be an integer >= 1, got {n!r}")
    n = int(n)
    ladder = [1 << i for i in range(n.bit_length()) if (1 << i) <= n]
    if ladder[-1] != n:
        ladder.append(n)
    return ladder


# --- empirical support


def epsilon(n: int, zeta: float = 0.05) -> float:
    """Probability cut-off of the empirical support at budget n: -ln(zeta) / n.

    A correct answer produced with probability above eps is missed by all n samples with
    probability below zeta.
    """
    if n < 1:
        raise ValueError(f"epsilon: n must be >= 1, got {n}")
    if not 0.0 < zeta < 1.0:
        raise ValueError(f"epsilon: zeta must be in (0, 1), got {zeta}")
    return -math.log(zeta) / n


SUPPORT_CLASSES = ("P", "E", "S", "O")


def classify(ref_c, cand_c) -> np.ndarray:
    """Per problem, its class against the reference: "P" solved by both (c >= 1), "E" by the candidate
    only, "S" by the reference only, "O" by neither. Takes correct counts or solved flags."""
    ref = np.asarray(ref_c) >= 1  # (problems,)
    cand = np.asarray(cand_c) >= 1  # (problems,)
    if ref.shape != cand.shape:
        raise ValueError(f"classify: shapes differ, {ref.shape} vs {cand.shape}")
    return np.where(ref, np.where(cand, "P", "S"), np.where(cand, "E", "O"))


def support_classes(ref_c, cand_c) -> dict[str, int]:
    """Observed class counts P (both), E (candidate only), S (reference only), O (neither)."""
    labels = classify(ref_c, cand_c)
    return {key: int(np.sum(labels == key)) for key in SUPPORT_CLASSES}


def classes_by_problem(ref_records: Sequence[Mapping], cand_records: Sequence[Mapping]) -> dict[str, str]:
    """problem_id -> P | E | S | O on the problems both record lists hold (matched by problem_id)."""
    ref = {r["problem_id"]: int(r["c"]) for r in ref_records}
    cand = {r["problem_id"]: int(r["c"]) for r in cand_records}
    ids = sorted(ref.keys() & cand.keys())
    labels = classify([ref[i] for i in ids], [cand[i] for i in ids])
    return dict(zip(ids, labels.tolist(), strict=True))


def expected_support_classes(a, b) -> dict[str, float]:
    """Expected classes at budget k from per-problem a = pass@k (reference), b = pass@k (candidate),
    the two models sampled independently. With a, b in {0, 1} (k = n) these are the observed classes.
    """
    a = np.asarray(a, dtype=np.float64)  # (problems,)
    b = np.asarray(b, dtype=np.float64)  # (problems,)
    if a.shape != b.shape:
        raise ValueError(f"expected_support_classes: shapes differ, {a.shape} vs {b.shape}")
    if np.any((a < 0) | (a > 1) | (b < 0) | (b > 1)):
        raise ValueError("expected_support_classes: probabilities must lie in [0, 1]")
    return {
        "P": float(np.sum(a * b)),
        "E": float(np.sum((1 - a) * b)),
        "S": float(np.sum(a * (1 - b))),
        "O": float(np.sum((1 - a) * (1 - b))),
    }


def support_rates(P: float, E: float, S: float, O: float) -> dict[str, float | None]:  # noqa: E741
    """SRR = P/(P+S), NDR = E/(P+E), SDS = harmonic mean of SRR and NDR, NSCR = (E-S)/(P+E+S).

    A rate with a zero denominator is None (undefined), never 0. SDS is None when SRR or NDR is
    undefined, or when both are 0.
    """
    for name, value in (("P", P), ("E", E), ("S", S), ("O", O)):
        if value < 0:
            raise ValueError(f"support_rates: {name} must be >= 0, got {value}")
    srr = P / (P + S) if P + S > 0 else None
    ndr = E / (P + E) if P + E > 0 else None
    if srr is None or ndr is None or srr + ndr == 0:
        sds = None
    else:
        sds = 2 * srr * ndr / (srr + ndr)
    nscr = (E - S) / (P + E + S) if P + E + S > 0 else None
    return {"SRR": _float(srr), "NDR": _float(ndr), "SDS": _float(sds), "NSCR": _float(nscr)}


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


# --- answer histograms


def answer_entropy(counts) -> float:
    """-sum_j p_j ln p_j over one problem's answer histogram (NA included), p_j = count_j / n."""
    counts = np.asarray(counts, dtype=np.float64)  # (distinct answers,)
    if np.any(counts < 0):
        raise ValueError("answer_entropy: counts must be >= 0")
    total = counts.sum()
    if total <= 0:
        raise ValueError("answer_entropy: the histogram is empty (no samples)")
    p = counts[counts > 0] / total
    return float(-np.sum(p * np.log(p)) + 0.0)


def missing_mass(correct_counts, n: int) -> float:
    """Good-Turing missing mass f1 / n: f1 = correct answers seen exactly once among n samples."""
    counts = np.asarray(correct_counts, dtype=np.int64)  # (distinct correct answers,)
    if n < 1:
        raise ValueError(f"missing_mass: n must be >= 1, got {n}")
    if counts.sum() > n:
        raise ValueError(f"missing_mass: correct counts sum to {counts.sum()} > n = {n}")
    return float(np.sum(counts == 1) / n)


def chao1(correct_counts) -> float:
    """Chao1 (bias-corrected) number of distinct correct answers: D_obs + f1 (f1 - 1) / (2 (f2 + 1))."""
    counts = np.asarray(correct_counts, dtype=np.int64)  # (distinct correct answers,)
    counts = counts[counts > 0]
    f1 = int(np.sum(counts == 1))
    f2 = int(np.sum(counts == 2))
    return float(counts.size + f1 * (f1 - 1) / (2 * (f2 + 1)))


def answer_level_support(
    ref_sets: Sequence[Iterable[str]], cand_sets: Sequence[Iterable[str]]
) -> dict[str, int]:
    """Distinct correct answers pooled over problems (aligned lists, one set per problem):
    preserved (both models), new (candidate only), lost (reference only)."""
    if len(ref_sets) != len(cand_sets):
        raise ValueError(
            f"answer_level_support: {len(ref_sets)} reference vs {len(cand_sets)} candidate problems"
        )
    preserved = new = lost = 0
    for ref, cand in zip(ref_sets, cand_sets, strict=True):
        ref, cand = set(ref), set(cand)
        preserved += len(ref & cand)
        new += len(cand - ref)
        lost += len(ref - cand)
    return {"preserved": preserved, "new": new, "lost": lost}


# --- records -> model-level metrics


def correct_counts(record: Mapping) -> list[int]:
    """Counts of the record's distinct correct answers."""
    return [int(a["count"]) for a in record["answers"] if a["correct"]]


def correct_answers(record: Mapping) -> set[str]:
    """The record's distinct correct canonical answers."""
    return {str(a["answer"]) for a in record["answers"] if a["correct"]}


def check_record(record: Mapping) -> None:
    """Raise ValueError naming the problem when a record is inconsistent."""
    name = record.get("problem_id", "<no problem_id>")
    for key in ("n", "c", "answers", "token_entropy"):
        if key not in record:
            raise ValueError(f"record {name}: missing key {key!r}")
    n, c = int(record["n"]), int(record["c"])
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"record {name}: need n >= 1 and 0 <= c <= n, got n={n}, c={c}")
    for answer in record["answers"]:
        if not isinstance(answer.get("correct"), (bool, np.bool_)):
            raise ValueError(
                f"record {name}: answer {answer.get('answer')!r} has correct={answer.get('correct')!r}"
            )
    total = sum(int(a["count"]) for a in record["answers"])
    if total != n:
        raise ValueError(f"record {name}: answer counts sum to {total}, expected n = {n}")
    if sum(correct_counts(record)) != c:
        raise ValueError(
            f"record {name}: correct answer counts sum to {sum(correct_counts(record))}, c = {c}"
        )


def common_budget(records: Sequence[Mapping]) -> int:
    """The n shared by all records (model-level pass@k is defined only at one budget)."""
    budgets = {int(r["n"]) for r in records}
    if len(budgets) != 1:
        raise ValueError(f"records have different budgets n: {sorted(budgets)}")
    return budgets.pop()


def summarize(records: Sequence[Mapping], zeta: float = 0.05) -> dict:
    """Model-level metrics (spec keys) from per-problem records sharing one budget n."""
    if not records:
        raise ValueError("summarize: no records")
    for record in records:
        check_record(record)
    n = common_budget(records)
    c = np.array([int(r["c"]) for r in records])  # (problems,)
    metrics: dict = {f"pass@{k}": float(np.mean(pass_at_k(n, c, k))) for k in k_ladder(n)}
    metrics["support_size"] = int(np.sum(c >= 1))
    metrics["eps"] = epsilon(n, zeta)
    metrics["token_entropy"] = float(np.mean([float(r["token_entropy"]) for r in records]))
    metrics["answer_entropy"] = float(
        np.mean([answer_entropy([a["count"] for a in r["answers"]]) for r in records])
    )
    metrics["distinct_correct"] = float(np.mean([len(correct_answers(r)) for r in records]))
    metrics["missing_mass"] = float(np.mean([missing_mass(correct_counts(r), n) for r in records]))
    metrics["chao1"] = float(np.mean([chao1(correct_counts(r)) for r in records]))
    metrics["num_problems"] = len(records)
    return metrics


def versus_reference(ref_records: Sequence[Mapping], cand_records: Sequence[Mapping]) -> dict:
    """P E S O and SRR NDR SDS NSCR of a candidate against a reference at the full budget.

    Records are matched by problem_id; both sides must hold the same problems.
    """
    ref = {r["problem_id"]: r for r in ref_records}
    cand = {r["problem_id"]: r for r in cand_records}
    if set(ref) != set(cand):
        only_ref, only_cand = sorted(set(ref) - set(cand)), sorted(set(cand) - set(ref))
        raise ValueError(
            f"versus_reference: problem sets differ (only reference: {only_ref[:5]}, "
            f"only candidate: {only_cand[:5]})"
        )
    ids = sorted(ref)
    for i in ids:
        if int(ref[i]["n"]) != int(cand[i]["n"]):
            raise ValueError(
                f"versus_reference: problem {i} has budget n={ref[i]['n']} (reference) "
                f"vs n={cand[i]['n']} (candidate); compare at one budget"
            )
    classes = support_classes([int(ref[i]["c"]) for i in ids], [int(cand[i]["c"]) for i in ids])
    return {**classes, **support_rates(**classes)}
