"""Profile a dataset's training split: the traits that decide which losses are worth trying.

:func:`profile_config` loads the data exactly as a run does (the data config's DataModule,
seeded from ``seed``) and measures its *training* split only; :func:`measure` does the
measuring on arrays, so it can be tested on data with a known answer. Every fraction comes
with a 95% Wilson interval and every moment with a bootstrap interval, so a reader can
tell a trait from noise.

Always: task, size, missing values, near-duplicate rows. Regression: the target's skew and
tails, the share of gross target errors (robust-fit residuals, as
:func:`~lossbench.data.synthetic.huber_outlier_fraction` measures them), leverage points
in X (robust Mahalanobis distances from scikit-learn's Minimum Covariance Determinant) and
heteroscedasticity (a Glejser test). Classification: class counts, imbalance ratio and the
head/tail profile, the label-noise rate by confident learning from cross-validated
out-of-sample probabilities of a logistic regression (Northcutt, Jiang & Chuang, "Confident
Learning: Estimating Uncertainty in Dataset Labels", JAIR 2021), the class counts and
imbalance ratio of the true labels that the same method estimates (label noise moves rows
between classes, so the given counts read flatter than the true ones), and the class pairs
most often confused.

Large sets are subsampled to ``max_rows`` training rows (stratified by class) and wide
inputs reduced with PCA before the model-based measures; the profile says so in its notes.

Over 500 lines on purpose: every trait the profile measures, each with its uncertainty, next
to the others it is reported with.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import DataError

Z95 = 1.959963984540054  # the 0.975 quantile of the standard normal
BOOTSTRAP = 200  # resamples behind a bootstrap interval
LEVERAGE_QUANTILE = 0.999  # a robust squared distance beyond chi2(p) at this quantile is a leverage point
LEVERAGE_DIMS = 10  # PCA components the robust covariance is fitted in
LEVERAGE_FIT_ROWS = 2000  # rows the robust covariance is fitted on, at most
MODEL_DIMS = 50  # PCA components the quick classifier sees, for wider inputs
DUPLICATE_TOL = 0.01  # near-duplicates: root-mean-square difference per standardised feature below this
HETERO_ALPHA = 0.001  # significance at which the Glejser test calls the noise heteroscedastic
MIN_ROWS = 20  # fewer training rows than this cannot be cross-validated in any useful way
MIN_PER_CLASS = 2  # cross-validation needs every class in at least two folds
QUICK_MODEL_C = 0.1  # inverse L2 strength of the quick classifier: strong enough that it does not learn the noise it measures


# --------------------------------------------------------------------------- intervals
def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion ``k / n`` (Wilson, JASA 1927)."""
    if n <= 0:
        return (math.nan, math.nan)
    p = k / n
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def fraction(k: int, n: int, method: str) -> dict[str, Any]:
    lo, hi = wilson(k, n)
    return {"value": k / n if n else math.nan, "ci": [lo, hi], "count": int(k), "of": int(n), "method": method}


def bootstrap_ci(values: np.ndarray, stat: Any, rng: np.random.Generator, n: int = BOOTSTRAP) -> tuple[float, float]:
    """95% percentile-bootstrap interval of ``stat(values)`` over rows."""
    m = len(values)
    draws = np.array([stat(values[rng.integers(0, m, m)]) for _ in range(n)])
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return (math.nan, math.nan)
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return (float(lo), float(hi))


# --------------------------------------------------------------------------- shared measures
def standardise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    sd = x.std(0)
    return (x - x.mean(0)) / np.where(sd > 1e-12, sd, 1.0)


def reduce_dims(x: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, str | None]:
    """``x`` (standardised) in at most ``k`` principal components; a note when it was reduced."""
    from sklearn.decomposition import PCA

    keep = x[:, x.std(0) > 1e-12]
    if keep.shape[1] <= k:
        return keep, None
    pca = PCA(n_components=k, svd_solver="randomized", random_state=seed)
    z = pca.fit_transform(keep)
    share = float(pca.explained_variance_ratio_.sum())
    return z, f"{keep.shape[1]} input features reduced to {k} principal components ({share:.0%} of the variance)"


def missing_values(table: Any | None, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Missing cells: in the raw table where there is one (a CSV), else in the training tensors."""
    if table is not None:
        per_col = {str(c): int(v) for c, v in table.isna().sum().items() if int(v)}
        rows = int(table.isna().any(axis=1).sum())
        return {"cells": int(sum(per_col.values())), "rows": rows, "by_column": per_col, "measured_on": "the whole table"}
    bad_x = ~np.isfinite(x).all(axis=1)
    bad_y = ~np.isfinite(y)
    return {"cells": int((~np.isfinite(x)).sum() + bad_y.sum()), "rows": int((bad_x | bad_y).sum()), "by_column": {},
            "measured_on": "the training split"}


def near_duplicates(x: np.ndarray, y: np.ndarray, task: str, tol: float = DUPLICATE_TOL) -> dict[str, Any]:
    """Rows whose standardised inputs lie within ``tol`` (root-mean-square per feature) of another row.

    Counted as copies: rows minus groups of near-identical inputs, so a row and its one copy
    count once. ``conflicting`` counts the groups whose targets disagree (different classes, or
    regression targets more than ``tol`` standardised units apart): a sign of label noise.
    """
    from scipy.sparse.csgraph import connected_components
    from sklearn.neighbors import radius_neighbors_graph

    n, p = x.shape
    radius = tol * math.sqrt(max(p, 1))
    graph = radius_neighbors_graph(x, radius, mode="connectivity", include_self=False)
    n_groups, labels = connected_components(graph, directed=False)
    copies = n - n_groups
    conflicting = 0
    if copies:
        sizes = np.bincount(labels)
        yy = np.asarray(y, dtype=np.float64)
        ys = yy if task != "regression" else yy / (yy.std() or 1.0)
        for g in np.flatnonzero(sizes > 1):
            vals = ys[labels == g]
            spread = np.ptp(vals)
            conflicting += int(spread > 0 if task != "regression" else spread > tol)
    out = fraction(copies, n, f"rows within {tol} standardised units (RMS per feature) of another row")
    out["conflicting_groups"] = conflicting
    return out


# --------------------------------------------------------------------------- regression
def target_shape(y: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    """Skewness and excess kurtosis of the target (0 and 0 for a Gaussian), with bootstrap intervals."""
    from scipy.stats import kurtosis, skew

    y = np.asarray(y, dtype=np.float64)
    return {
        "skew": {"value": float(skew(y)), "ci": list(bootstrap_ci(y, skew, rng)), "method": "sample skewness, bootstrap CI"},
        "excess_kurtosis": {
            "value": float(kurtosis(y)),
            "ci": list(bootstrap_ci(y, kurtosis, rng)),
            "method": "Fisher's excess kurtosis (0 for a Gaussian), bootstrap CI",
        },
    }


def robust_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Residuals and fitted values (in standardised target units) of a Huber regression of ``y`` on ``x``,
    fitted as :func:`~lossbench.data.synthetic.huber_outlier_fraction` fits it."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import HuberRegressor

    xs = standardise(x)
    ys = (y - y.mean()) / (float(y.std()) or 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = HuberRegressor(max_iter=500).fit(xs, ys)
    fitted = model.predict(xs)
    return ys - fitted, fitted


def outlier_fraction(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Share of training targets with a gross error: :func:`huber_outlier_fraction`, with a Wilson interval."""
    from ..data.synthetic import OUTLIER_THRESHOLD, huber_outlier_fraction

    value = huber_outlier_fraction(x, y)
    n = len(y)
    out = fraction(int(round(value * n)), n, f"robust linear (Huber) fit residuals beyond {OUTLIER_THRESHOLD} "
                                             "robust SDs (1.4826 MAD) from their median")
    out["value"] = value
    return out


def leverage(x: np.ndarray, seed: int = 0) -> tuple[dict[str, Any], str | None]:
    """Share of rows far from the bulk of X by robust Mahalanobis distance (Minimum Covariance
    Determinant, Rousseeuw & Van Driessen 1999): squared distance beyond the chi-squared
    quantile :data:`LEVERAGE_QUANTILE` with as many degrees of freedom as dimensions."""
    from scipy.stats import chi2
    from sklearn.covariance import MinCovDet

    z, note = reduce_dims(x, LEVERAGE_DIMS, seed)
    n, p = z.shape
    method = f"robust Mahalanobis distance (MinCovDet) beyond chi2({p}) at {LEVERAGE_QUANTILE}"
    if p == 0:
        return fraction(0, n, method + ": every feature is constant"), note
    fit_rows = subsample(n, LEVERAGE_FIT_ROWS, None, seed)  # MCD's cost grows fast with rows; distances for all
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        mcd = MinCovDet(random_state=seed).fit(z if fit_rows is None else z[fit_rows])
    d2 = mcd.mahalanobis(z)
    k = int(np.sum(d2 > chi2.ppf(LEVERAGE_QUANTILE, p)))
    return fraction(k, n, method), note


def heteroscedasticity(x: np.ndarray, residuals: np.ndarray, fitted: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Whether the noise level changes with the inputs.

    The Glejser test (Glejser, JASA 1969) with White's squares (White, Econometrica 1980):
    regress the absolute robust-fit residuals on the inputs (at most :data:`LEVERAGE_DIMS`
    principal components), the fitted values, and the squares of both; ``n R^2`` is
    chi-squared under constant noise. Absolute rather than squared residuals
    (as Breusch-Pagan uses) keep a few gross errors from deciding the test. Also given: the
    Spearman correlation of ``|residual|`` with the fitted value and its 95% interval
    (Fisher's z with the standard error ``1.03 / sqrt(n - 3)``, Fieller et al. 1957).

    The residuals are those of a linear fit, so a nonlinear mean that the fit misses shows up
    here too (measured: a clean sum of sines and squares is called heteroscedastic); the
    method string says so.
    """
    from scipy.stats import chi2, spearmanr

    z, _ = reduce_dims(x, LEVERAGE_DIMS, seed)
    a = np.abs(residuals)
    f = (fitted - fitted.mean()) / (fitted.std() or 1.0)
    design = np.column_stack([np.ones(len(a)), z, z**2, f, f**2])  # squares catch noise that grows both ways
    coef, *_ = np.linalg.lstsq(design, a, rcond=None)
    resid = a - design @ coef
    r2 = 1.0 - float(resid @ resid) / float(((a - a.mean()) ** 2).sum() or 1.0)
    df = design.shape[1] - 1
    stat = len(a) * r2
    p_value = float(chi2.sf(stat, df))
    rho = float(spearmanr(a, fitted).statistic)
    half = Z95 * 1.03 / math.sqrt(max(len(a) - 3, 1))
    z = math.atanh(max(min(rho, 0.999999), -0.999999))
    rho_ci = [math.tanh(z - half), math.tanh(z + half)]
    return {
        "detected": bool(p_value < HETERO_ALPHA),
        "p_value": p_value,
        "r2": r2,
        "statistic": stat,
        "df": df,
        "rho_abs_residual_fitted": {"value": rho, "ci": rho_ci, "method": "Spearman, Fisher-z CI"},
        "method": f"Glejser test: |robust residual| on the inputs, fitted values and their squares, n R^2 ~ chi2({df}); "
                  f"heteroscedastic when p < {HETERO_ALPHA} (a nonlinear mean the linear fit misses also counts)",
    }


# --------------------------------------------------------------------------- classification
def class_profile(counts: np.ndarray) -> dict[str, Any]:
    """Counts, imbalance ratio (largest / smallest non-empty class), and the shape of the tail."""
    from ..metrics import shot_groups

    counts = np.asarray(counts, dtype=np.int64)
    nz = counts[counts > 0]
    ratio = float(nz.max() / nz.min()) if nz.size else math.nan
    order = np.sort(nz)[::-1]
    k_head = max(1, int(round(0.2 * order.size)))
    groups = shot_groups(counts.tolist())
    shape = "balanced"
    if ratio >= 1.5 and order.size >= 3:
        logs = np.log(order)
        ranks = np.arange(order.size)
        slope, icept = np.polyfit(ranks, logs, 1)
        ss = float(((logs - logs.mean()) ** 2).sum()) or 1.0
        r2_exp = 1.0 - float(((logs - (slope * ranks + icept)) ** 2).sum()) / ss
        # step (Buda et al. 2018): every count close to either the largest or the smallest
        gap = np.minimum(np.abs(order - order.max()), np.abs(order - order.min()))
        two_level = bool(np.all(gap <= 0.1 * order.max()))
        shape = "step" if two_level else "exponential" if r2_exp >= 0.9 else "irregular"
    elif ratio >= 1.5:
        shape = "two classes, unequal"
    return {
        "class_counts": counts.tolist(),
        "imbalance_ratio": ratio,
        "empty_classes": [int(k) for k in np.flatnonzero(counts == 0)],
        "head_share": float(order[:k_head].sum() / order.sum()) if order.size else math.nan,
        "head_classes": k_head,
        "shape": shape,
        "shot_groups": {"rule": groups.rule, **groups.as_dict()},
    }


def out_of_sample_probabilities(x: np.ndarray, y: np.ndarray, n_classes: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """Cross-validated predicted probabilities of a multinomial logistic regression (each row
    predicted by a model that did not see it); returns them and the number of folds."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    counts = np.bincount(y, minlength=n_classes)
    folds = int(min(5, counts[counts > 0].min()))
    model = LogisticRegression(max_iter=300, C=QUICK_MODEL_C)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probs = cross_val_predict(model, x, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                                  method="predict_proba")
    present = np.flatnonzero(counts > 0)
    full = np.zeros((len(y), n_classes))
    full[:, present] = probs  # classes absent from training get probability 0
    return full, folds


def confident_joint(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The calibrated joint distribution ``Q[given, true]`` of confident learning (Northcutt et al. 2021, §3).

    Per class ``j`` the threshold ``t_j`` is the mean predicted probability of ``j`` over the
    rows labelled ``j``. A row counts towards ``(given label, j*)`` where ``j*`` is the model's
    most probable class and its probability reaches ``t_j*``; rows whose most probable class
    stays below its threshold are not counted. Each row of counts is then rescaled to the given
    label's count and the whole divided by ``n``.

    The paper takes for ``j*`` the most probable of the classes that reach their thresholds,
    whichever that is. Where most labels of a class are wrong (a tail class under symmetric
    noise: its few rows plus many moved in from the head), ``t_j`` falls to the noise floor,
    the probability of ``j`` the model gives every row; a head row then reaches ``t_j`` while
    its own class misses its higher threshold, and the paper's rule counts it as a wrong label
    of true class ``j``. Measured on the choose benchmark's tables: that rule read 0.50 where
    0.38 of the labels were wrong (imbalance 50, 40% noise) and put 46 rows in a tail class of 5;
    requiring ``j*`` to be the argmax read 0.37, and no more on the tables without noise. Every
    given class has at least one count on its diagonal (as cleanlab clips it), so a class with
    no counted row keeps its rows rather than drop out of the joint.
    """
    n, k = probs.shape
    given = np.bincount(labels, minlength=k)
    thresholds = np.array([probs[labels == j, j].mean() if given[j] else np.inf for j in range(k)])
    true = probs.argmax(1)
    counted = probs[np.arange(n), true] >= thresholds[true] - 1e-12
    joint = np.zeros((k, k))
    np.add.at(joint, (labels[counted], true[counted]), 1.0)
    diag = np.diag_indices(k)
    joint[diag] = np.maximum(joint[diag], (given > 0).astype(np.float64))
    rows = joint.sum(1, keepdims=True)
    joint = np.where(rows > 0, joint / np.where(rows > 0, rows, 1.0), 0.0) * given[:, None]
    return joint / max(joint.sum(), 1.0)


def clean_counts(joint: np.ndarray, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Estimated class counts of the true labels: the column sums of ``Q[given, true]`` times ``n``.

    Confident learning's joint estimates the true labels' prior as its column marginal,
    ``p(y* = j) = sum_i Q[i, j]`` (Northcutt et al., JAIR 2021). ``weights`` (per given class: rows of the split per
    profiled row) undo a class-stratified subsample, which over-represents the small classes.
    """
    w = np.ones(joint.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    return (joint * n * w[:, None]).sum(0)


def clean_ratio(counts: np.ndarray, present: np.ndarray) -> float:
    """Largest / smallest estimated clean count over the classes with given labels (each at least one row)."""
    c = np.maximum(counts[present], 1.0)
    return float(c.max() / c.min())


def label_noise(
    probs: np.ndarray, labels: np.ndarray, rng: np.random.Generator, weights: np.ndarray | None = None
) -> tuple[dict[str, Any], np.ndarray, dict[str, Any]]:
    """Estimated share of wrong labels, ``1 - trace(Q)``, and the clean labels' class counts and
    imbalance ratio (:func:`clean_counts`), each with a bootstrap interval over rows (the same draws)."""
    joint = confident_joint(probs, labels)
    value = float(1.0 - np.trace(joint))
    n, k = probs.shape
    present = np.bincount(labels, minlength=k) > 0
    counts = clean_counts(joint, n, weights)
    draws, ratios = [], []
    for _ in range(BOOTSTRAP):
        i = rng.integers(0, n, n)
        q = confident_joint(probs[i], labels[i])
        draws.append(1.0 - np.trace(q))
        ratios.append(clean_ratio(clean_counts(q, n, weights), present))
    lo, hi = np.percentile(draws, [2.5, 97.5])
    r_lo, r_hi = np.percentile(ratios, [2.5, 97.5])
    clean = {
        "counts": [round(float(c), 1) for c in counts],
        "imbalance_ratio": {
            "value": clean_ratio(counts, present),
            "ci": [float(r_lo), float(r_hi)],
            "method": "largest / smallest class of the true labels as confident learning estimates them (column sums "
                      "of its joint Q[given, true], Northcutt et al., JAIR 2021; each class at least one row), "
                      "bootstrap CI",
        },
    }
    return {
        "value": value,
        "ci": [float(lo), float(hi)],
        "method": "confident learning (Northcutt et al., JAIR 2021) on 5-fold out-of-sample probabilities of a "
                  "logistic regression, bootstrap CI",
    }, joint, clean


def confused_pairs(joint: np.ndarray, n: int, names: list[str], top: int = 3) -> list[dict[str, Any]]:
    """The class pairs whose labels confident learning most often finds swapped (both directions together)."""
    k = joint.shape[0]
    pairs = []
    for a in range(k):
        for b in range(a + 1, k):
            share = float(joint[a, b] + joint[b, a])
            if share > 0:
                pairs.append({"classes": [names[a], names[b]], "share": share, "rows": int(round(share * n)),
                              "given_a_true_b": int(round(joint[a, b] * n)), "given_b_true_a": int(round(joint[b, a] * n))})
    pairs.sort(key=lambda d: -d["share"])
    return pairs[:top]


# --------------------------------------------------------------------------- the profile
def subsample(n: int, max_rows: int, labels: np.ndarray | None, seed: int) -> np.ndarray | None:
    """Row indices of a (class-stratified) subsample of at most ``max_rows``; None when all fit."""
    if n <= max_rows:
        return None
    rng = np.random.default_rng(seed)
    if labels is None:
        return np.sort(rng.choice(n, max_rows, replace=False))
    take = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(min(idx.size, MIN_PER_CLASS * 3), int(round(idx.size * max_rows / n)))
        take.append(rng.choice(idx, min(k, idx.size), replace=False))
    return np.sort(np.concatenate(take))


def measure(
    x: np.ndarray,
    y: np.ndarray,
    task: str,
    *,
    class_names: list[str] | None = None,
    table: Any | None = None,
    max_rows: int = 5000,
    seed: int = 0,
) -> dict[str, Any]:
    """The traits of a training split given as arrays (``x`` rows of features, ``y`` targets or class indices).

    Raises :class:`DataError` for data no loss can be chosen for: a constant target, a
    single class, a class with one row, or too few rows to cross-validate.
    """
    tic = time.monotonic()
    x = np.asarray(x).reshape(len(x), -1)  # as given (float32 images stay float32 until subsampled)
    y = np.asarray(y)
    n_total = len(y)
    notes: list[str] = []
    if n_total < MIN_ROWS:
        raise DataError(
            f"the training split has {n_total} rows, too few to cross-validate a profile (at least {MIN_ROWS}); "
            f"use a larger table or smaller data.val_fraction/data.test_fraction."
        )
    miss = missing_values(table, x, y)
    labels = y.astype(np.int64) if task != "regression" else None
    full_labels = labels
    idx = subsample(n_total, max_rows, labels, seed)
    if idx is not None:
        x, y = x[idx], y[idx]
        labels = labels[idx] if labels is not None else None
        notes.append(f"measured on a {'class-stratified ' if labels is not None else ''}random subsample of "
                     f"{len(y)} of the {n_total} training rows (choose.profile_rows)")
    x = x.astype(np.float64)
    xs = standardise(x)
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {
        "task": task,
        "n_samples": int(n_total),
        "n_profiled": int(len(y)),
        "n_features": int(x.shape[1]),
        "missing_values": miss,
    }
    xd, note = reduce_dims(xs, MODEL_DIMS, seed) if xs.shape[1] > 100 else (xs, None)
    if note:
        notes.append("near-duplicates and the quick model: " + note)
    out["near_duplicates"] = near_duplicates(xd, y, task)
    if task == "regression":
        y = y.astype(np.float64)
        if float(np.ptp(y)) == 0.0:
            raise DataError(
                f"the target is constant (every training value is {float(y[0]):g}): there is nothing to predict; "
                f"choose another target column (data.target)."
            )
        out["target"] = target_shape(y, rng)
        out["outlier_fraction"] = outlier_fraction(xs, y)
        out["leverage_fraction"], note = leverage(xs, seed)
        if note:
            notes.append("leverage and heteroscedasticity: " + note)
        resid, fitted = robust_fit(xs, y)
        out["heteroscedasticity"] = heteroscedasticity(xs, resid, fitted, seed)
    else:
        assert labels is not None
        n_classes = int(max(len(class_names or []), int(full_labels.max()) + 1))
        names = [str(c) for c in (class_names or range(n_classes))]
        assert full_labels is not None
        counts_all = np.bincount(full_labels, minlength=n_classes)  # the whole split's, not the subsample's
        present = counts_all[counts_all > 0]
        if present.size < 2:
            raise DataError(
                f"the training split holds a single class ({names[int(np.flatnonzero(counts_all)[0])]!r}); "
                f"classification needs at least two: check data.target."
            )
        lonely = [names[k] for k in np.flatnonzero((counts_all > 0) & (counts_all < MIN_PER_CLASS))]
        if lonely:
            raise DataError(
                f"class {lonely[0]!r} has a single training row{' (and ' + str(len(lonely) - 1) + ' more)' if len(lonely) > 1 else ''}: "
                f"too few to learn or to cross-validate; add rows of it or drop them from the table."
            )
        out.update(class_profile(counts_all))
        out["class_names"] = names
        probs, folds = out_of_sample_probabilities(xd, labels, n_classes, seed)
        counts_profiled = np.bincount(labels, minlength=n_classes)
        weights = np.where(counts_profiled > 0, counts_all / np.maximum(counts_profiled, 1), 0.0)
        noise, joint, clean = label_noise(probs, labels, rng, weights)
        out["label_noise"] = noise
        out["clean_class_counts"] = clean["counts"]
        out["clean_imbalance_ratio"] = clean["imbalance_ratio"]
        out["confused_pairs"] = confused_pairs(joint, len(labels), names)
        out["quick_model"] = {
            "model": "multinomial logistic regression" + (f" on {xd.shape[1]} principal components" if note else ""),
            "folds": folds,
            "out_of_sample_accuracy": float(np.mean(probs.argmax(1) == labels)),
        }
    out["notes"] = notes
    out["seconds"] = round(time.monotonic() - tic, 3)
    return out


# --------------------------------------------------------------------------- from a config
def load_training_split(cfg: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, Any, Any | None]:
    """The training split of the config's data, built by its DataModule as a run builds it.

    Returns ``(x, y, info, table)``: inputs and targets (as the model sees them: normalised as
    the config says, regression targets included), the :class:`~lossbench.data.base.DataInfo`,
    and the raw table for a CSV or Parquet source (None otherwise), whose missing cells the
    profile counts before the DataModule refuses them.
    """
    from ..pipeline import build_data, seed_everything

    seed = int(cfg.get("seed", 0))
    seed_everything(seed)
    _, dm = build_data(cfg["data"])
    table = None
    read = getattr(dm, "_read_table", None)
    if callable(read):
        table = read()
        cols = [c for c in (dm._columns(table) + [dm.target]) if c in table.columns]
        table = table[cols]
        if table.isna().any().any():
            miss = missing_values(table, np.zeros((0, 0)), np.zeros(0))
            cols_txt = ", ".join(f"{c!r} ({k})" for c, k in miss["by_column"].items())
            raise DataError(
                f"the table has {miss['cells']} missing value(s) in {miss['rows']} row(s): {cols_txt}; fill or "
                f"drop those rows before choosing a loss."
            )
    info = dm.info
    x, y = dm.tensors("train")
    return x.detach().cpu().numpy(), y.detach().cpu().numpy(), info, table


def profile_config(cfg: Mapping[str, Any], max_rows: int = 5000) -> dict[str, Any]:
    """Profile the training split of ``cfg['data']`` (a resolved config as a plain mapping)."""
    x, y, info, table = load_training_split(cfg)
    names = info.extra.get("class_names") if info.extra else None
    out = measure(x, y, info.task, class_names=[str(c) for c in names] if names else None, table=table,
                  max_rows=max_rows, seed=int(cfg.get("seed", 0)))
    out["data"] = info.name
    out["n_train"], out["n_val"], out["n_test"] = info.n_train, info.n_val, info.n_test
    out["input_shape"] = list(info.input_shape)
    out["objective"] = {"metric": info.objective, "mode": info.objective_mode}
    return out
