"""From a profile to a shortlist of losses, each with the reasons it is on the list.

The rules follow the source document's guide to choosing a loss (``seed-guide.md`` §4):

1. the task decides the loss family, and its standard loss is always the baseline
   (mse for regression, cross_entropy for multi-class, bce for binary labels);
2. normalisation is advice, not a loss: a skewed or heavy-tailed target gets a note;
3. the shortlist is then ranked by experiment (the sweep), never by these rules;
4. a combination is tried where two measured traits call for two different losses;
5. every measured trait brings the losses that build it in, chosen by the registry's traits
   (``robust_to_outliers``, ``bounded_influence``, ``handles_imbalance``,
   ``handles_label_noise``), at most ``max_per_trait`` per trait (default 1).

Where several losses carry the same trait, :data:`PREFERENCE` orders them (a plugin loss
with the trait comes after the built-ins, alphabetically): with the default of one a trait,
l1 for gross errors (and the redescending welsch where they are many), class re-weighting
for imbalance, symmetric cross-entropy for label noise; the order is measured (see there).

Where imbalance and label noise come together the list is nested, one trait a step: the
baseline, the imbalance loss, then the combination that adds the noise loss to it, so
"does re-balancing help" and "does noise robustness on top help" are each one paired
comparison. The noise loss alone (which leaves the imbalance the objective weighs
unanswered) joins only with ``max_per_trait`` of 2 or more. A short list is the point: every
loss on it costs as many runs as the baseline, and the full set of a task's losses is about
four times the list (``python -m lossbench.benchmark choose``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

BASELINE = {"regression": "mse", "multiclass": "cross_entropy", "binary": "bce"}

# thresholds on the profile's 95% intervals: a trait counts when its lower bound clears them
OUTLIERS_LOW = 0.01  # share of gross target errors
MANY_OUTLIERS = 0.10  # from here a redescending loss is worth a place too
LEVERAGE_LOW = 0.01  # share of leverage points in X
IMBALANCE_RATIO = 3.0  # largest / smallest class
MILD_IMBALANCE = 1.5
LABEL_NOISE_LOW = 0.05  # estimated share of wrong labels
HEAVY_TAILS_LOW = 1.0  # excess kurtosis of the target
SKEW_LOW = 1.0  # absolute skewness of the target
ROBUST_OBJECTIVE_OUTLIERS = 0.05  # gross target errors of the data's own from which the sweep ranks by median_ae

# Within a trait, which losses come first (built-in names; others follow alphabetically). With one
# loss a trait, the first decides, so the order follows measurement: the full sweeps of
# `python -m lossbench.benchmark choose --seeds 10` (2026-12-07, tables of 420 to 2,000 rows, an MLP,
# 10 epochs, defaults). l1, whose minimiser is the conditional median, was best under gross errors
# (median_ae 0.350 at 25% against huber's 0.509 at delta=1), welsch the best redescending one;
# weighted_ce was tied with the best on all four imbalanced tables, logit_adjusted on three (0.713
# against 0.855 at 50:1, where the tail class has a handful of rows); sce was tied with the best at
# 20% and best at 40% symmetric noise, where gce was significantly worse at 20%. On long training of
# deep networks (CIFAR-LT) logit adjustment is reported ahead of re-weighting (Menon et al., 2021);
# max_per_trait=2 sweeps both. Two classes at 20:1: weighted_ce (two logits) reached a balanced
# accuracy of 0.991, logit_adjusted 0.964, balanced_bce 0.519 at its default alpha = 0.25 (the focal
# paper's, which weighs the positives, here the rare class, down), no better than bce's 0.534.
PREFERENCE = {
    "outliers": ("l1", "huber", "smooth_l1", "pseudo_huber", "log_cosh", "quantile"),
    "redescending": ("welsch", "cauchy", "tukey", "barron"),
    "heteroscedasticity": ("l1", "quantile", "huber"),
    "imbalance": ("weighted_ce", "logit_adjusted", "ldam", "focal", "balanced_softmax", "class_balanced"),
    "imbalance_binary": ("weighted_ce", "logit_adjusted", "class_balanced", "balanced_bce", "binary_focal"),
    "label_noise": ("sce", "gce", "js_div"),
}


@dataclass
class Candidate:
    """One loss on the shortlist: the loss config to run, fixed settings, and why it is there."""

    loss: str  # a loss config name: configs/loss/<loss>.yaml
    answers: list[str] = field(default_factory=list)  # "baseline", "outliers", "imbalance", ...
    reasons: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)  # fixed settings (combo's terms)

    def as_dict(self) -> dict[str, Any]:
        return {"loss": self.loss, "answers": list(self.answers), "reasons": list(self.reasons), "params": dict(self.params)}


@dataclass
class Shortlist:
    candidates: list[Candidate]
    notes: list[str]  # advice that is not a loss (normalisation, what the profile cannot see)
    objective: str = ""  # the metric the sweep selects and ranks by (see default_objective)
    objective_reason: str = ""

    @property
    def losses(self) -> list[str]:
        return [c.loss for c in self.candidates]

    def as_dict(self) -> dict[str, Any]:
        return {"losses": [c.as_dict() for c in self.candidates], "notes": list(self.notes),
                "objective": self.objective, "objective_reason": self.objective_reason}


def pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def ci_text(est: Mapping[str, Any], fmt: Any = pct) -> str:
    lo, hi = est["ci"]
    return f"{fmt(est['value'])} (95% CI {fmt(lo)} to {fmt(hi)})"


def low(est: Mapping[str, Any] | None) -> float:
    """The lower end of an estimate's interval (its value where it has none)."""
    if not est:
        return float("-inf")
    ci = est.get("ci") or [est.get("value")]
    v = ci[0] if ci and ci[0] is not None else est.get("value")
    return float("-inf") if v is None else float(v)


def imbalance_basis(profile: Mapping[str, Any]) -> tuple[float | None, bool, str, bool]:
    """The class imbalance the shortlist decides on: ``(ratio, imbalanced, words, estimated)``.

    The given labels' largest / smallest class is exact, and decides, unless the label noise is
    material (its interval starts at :data:`LABEL_NOISE_LOW` or above, the criterion that brings
    the noise-robust losses): wrong labels move rows between classes, and symmetric noise moves
    many head rows into the tail, so the given counts read far flatter than the true ones. Then
    confident learning's estimate for the true labels (``clean_imbalance_ratio``) decides, by the
    lower end of its interval, as every estimated trait here does.
    """
    ratio = profile.get("imbalance_ratio")
    clean = profile.get("clean_imbalance_ratio")
    noise = profile.get("label_noise")
    if clean and clean.get("value") is not None and low(noise) >= LABEL_NOISE_LOW:
        value, (lo, hi) = float(clean["value"]), clean["ci"]
        given = f", against {ratio:.3g} for the given labels" if ratio is not None else ""
        words = (f"{value:.3g} as estimated for the true labels (95% CI {lo:.3g} to {hi:.3g}){given}: confident "
                 f"learning finds {pct(noise['value'])} of the labels wrong, and wrong labels move rows between "
                 f"classes (symmetric noise flattens the counts), so the estimate decides, by the lower end of its "
                 f"interval")
        return value, low(clean) >= IMBALANCE_RATIO, words, True
    return ratio, ratio is not None and ratio >= IMBALANCE_RATIO, "" if ratio is None else f"{ratio:.3g}", False


def ranked(trait: str, registry_trait: str | Sequence[str], task: str, *, exclude: Sequence[str] = ()) -> list[str]:
    """Registered losses fitting ``task`` with every trait in ``registry_trait``, in preference order."""
    from ..registry import list_losses, loss_info

    wanted = (registry_trait,) if isinstance(registry_trait, str) else tuple(registry_trait)
    names = set(list_losses(task=task))
    for t in wanted:
        names &= set(list_losses(task=task, trait=t))
    if trait == "redescending":  # bounded influence without convexity: the influence falls back to zero
        names = {n for n in names if "convex" not in loss_info(n).traits}
    names -= set(exclude)
    names.discard("combo")
    pref = PREFERENCE.get(trait, ())
    return [n for n in pref if n in names] + sorted(names - set(pref))


def traits_text(name: str) -> str:
    from ..registry import loss_info

    spec = loss_info(name)
    words = ", ".join(t.replace("_", " ") for t in sorted(spec.traits)) or "no declared traits"
    return f"{name} ({words}; {spec.reference or spec.description})"


class _Builder:
    def __init__(self, task: str, max_per_trait: int):
        self.task = task
        self.max = max_per_trait
        self.by_name: dict[str, Candidate] = {}

    def add(self, loss: str, answers: str, reason: str, params: Mapping[str, Any] | None = None) -> None:
        c = self.by_name.setdefault(loss, Candidate(loss, params=dict(params or {})))
        if answers not in c.answers:
            c.answers.append(answers)
        c.reasons.append(reason)

    def add_some(self, names: Sequence[str], answers: str, reason: str, limit: int | None = None) -> list[str]:
        picked = list(names[: self.max if limit is None else limit])
        for n in picked:
            self.add(n, answers, reason)
        return picked


def shortlist(profile: Mapping[str, Any], *, max_per_trait: int = 1, extra: Sequence[str] = ()) -> Shortlist:
    """The losses worth sweeping for data with this profile (see the module's rules)."""
    from ..registry import loss_info

    task = str(profile["task"])
    b = _Builder(task, max(1, int(max_per_trait)))
    notes: list[str] = []
    base = BASELINE[task]
    b.add(base, "baseline", f"the standard loss of a {task} task (guide, point 1): every other loss must beat it "
                            f"to be worth its extra assumptions")
    if task == "regression":
        _regression(profile, b, notes)
    else:
        _classification(profile, b, notes)
    for name in extra:
        spec = loss_info(name)  # an unknown name fails here, with a did-you-mean
        b.add(str(name), "requested", f"added by hand (choose.extra_losses); registry traits: {traits_text(spec.name)}")
    if "combo" not in b.by_name:
        notes.append("No combination: the guide's fourth point calls for one where two measured traits need different "
                     "losses, and this data does not show such a pair.")
    if len(b.by_name) == 1:
        notes.append("No trait of this data calls for another loss, so the baseline is swept alone: the report gives "
                     "its score over the seeds, not a comparison. To test whether another loss beats it, add "
                     "candidates with choose.extra_losses=[...].")
    return Shortlist(list(b.by_name.values()), notes)


def default_objective(profile: Mapping[str, Any], data_cfg: Mapping[str, Any]) -> tuple[str, str]:
    """The metric the sweep selects on validation and ranks on test, and why.

    The user's ``data.objective`` always wins. Regression whose gross target errors are the
    data's own (a table, split at random, so they sit in every split; lower 95% bound at least
    ``ROBUST_OBJECTIVE_OUTLIERS``) ranks by median absolute error: RMSE there rewards the loss that
    fits the errors. Where lossbench injects the errors itself (a data set with an
    ``outlier_fraction`` setting) they are in the training split only, and RMSE on the clean test
    split measures the fit to the true targets. Classification ranks by balanced accuracy.
    """
    task, own = str(profile["task"]), data_cfg.get("objective")
    if own:
        return str(own), f"data.objective={own}, set by you, selects on validation and ranks on test."
    if task != "regression":
        ratio, imbalanced, _, estimated = imbalance_basis(profile)
        if imbalanced:
            words = (f"{ratio:.3g} as estimated for the true labels, {profile['imbalance_ratio']:.3g} for the given ones"
                     if estimated else f"{ratio:.3g}")
            return "balanced_accuracy", (
                f"balanced_accuracy, as the classes are imbalanced (largest / smallest {words}): it averages the "
                f"recall of each class, where accuracy would reward a loss that favours the common ones.")
        return "balanced_accuracy", ("balanced_accuracy, the task's default: it weighs every class alike, and with "
                                     "classes this even it reads close to accuracy.")
    out = profile.get("outlier_fraction")
    if low(out) >= ROBUST_OBJECTIVE_OUTLIERS:
        if "outlier_fraction" in data_cfg:
            return "rmse", (f"rmse, the task's default: the {ci_text(out)} gross target errors are injected into the "
                            f"training split only (data.outlier_fraction), so the test targets are clean and RMSE "
                            f"measures the fit to them.")
        return "median_ae", (
            f"median_ae (median absolute error), as {ci_text(out)} of the targets are gross errors, and a table's "
            f"errors sit in every split, test included: RMSE squares them, so it would rank first the loss that fits "
            f"them. The median error of the typical point does not move with them; test RMSE is still shown beside "
            f"it. Set data.objective=rmse to rank by RMSE instead.")
    return "rmse", ("rmse, the task's default: too few gross target errors to let them decide the ranking "
                    f"(below {pct(ROBUST_OBJECTIVE_OUTLIERS)}).")


def _regression(p: Mapping[str, Any], b: _Builder, notes: list[str]) -> None:
    out = p.get("outlier_fraction")
    lev = p.get("leverage_fraction")
    het = p.get("heteroscedasticity") or {}
    target = p.get("target") or {}
    outliers = low(out) >= OUTLIERS_LOW
    leverage = low(lev) >= LEVERAGE_LOW
    if outliers:
        names = ranked("outliers", ("robust_to_outliers", "bounded_influence", "convex"), "regression")
        b.add_some(names, "outliers",
                   f"{ci_text(out)} of the training targets are gross errors by a robust fit (guide, point 5); a convex "
                   f"loss with bounded influence gives each of them a constant pull instead of one that grows with "
                   f"its size, and stays easy to optimise")
    else:
        notes.append(f"Gross target errors: {ci_text(out)} by a robust fit, too few to call for a robust loss." if out else
                     "Gross target errors were not measured.")
    if (outliers and out["value"] >= MANY_OUTLIERS) or (outliers and leverage):
        why = (f"with {pct(out['value'])} gross errors" if out["value"] >= MANY_OUTLIERS else
               f"with {ci_text(lev)} of the rows far out in X (leverage points) besides the gross errors")
        b.add_some(ranked("redescending", ("robust_to_outliers", "bounded_influence"), "regression"), "outliers",
                   f"{why}, a redescending loss, whose influence falls back to zero for large residuals, can ignore "
                   f"them entirely where a convex one still feels each; it is not convex, so the sweep checks that it "
                   f"trains", limit=1)
    if leverage and not outliers:
        notes.append(f"Leverage points: {ci_text(lev)} of the rows lie far from the bulk of X, but their targets fit "
                     f"(no gross errors), so they inform the fit rather than spoil it; no loss is added for them.")
    if het.get("detected"):
        rho = het["rho_abs_residual_fitted"]
        b.add_some(ranked("heteroscedasticity", "robust_to_outliers", "regression"), "heteroscedasticity",
                   f"the noise level changes across the inputs (Glejser test p = {het['p_value']:.2g}; Spearman "
                   f"correlation of |residual| with the fitted value {ci_text(rho, lambda v: f'{v:.2f}')}; a nonlinear "
                   f"mean that a linear fit misses looks the same); squared error lets the noisiest region dominate "
                   f"the fit, an absolute-error loss weighs every region alike",
                   limit=1)
    skew = target.get("skew")
    kurt = target.get("excess_kurtosis")
    if skew and min(abs(skew["ci"][0]), abs(skew["ci"][1])) >= SKEW_LOW and skew["ci"][0] * skew["ci"][1] > 0:
        notes.append(f"The target is skewed (skewness {ci_text(skew, lambda v: f'{v:.2f}')}): consider "
                     f"data.normalize_target=robust or modelling a transformed target (guide, point 2).")
    if kurt and low(kurt) >= HEAVY_TAILS_LOW:
        notes.append(f"The target's tails are heavier than a Gaussian's (excess kurtosis "
                     f"{ci_text(kurt, lambda v: f'{v:.1f}')}); data.normalize_target=robust (median and IQR) keeps "
                     f"the extremes from setting the scale in which a loss's threshold lives (guide, point 2).")


def _classification(p: Mapping[str, Any], b: _Builder, notes: list[str]) -> None:
    task = b.task
    given_ratio = p.get("imbalance_ratio")
    noise = p.get("label_noise")
    imbalance_names = ranked("imbalance_binary" if task == "binary" else "imbalance", "handles_imbalance", task)
    noise_names = ranked("label_noise", "handles_label_noise", task)
    ratio, imbalanced, ratio_words, on_clean = imbalance_basis(p)
    noisy = low(noise) >= LABEL_NOISE_LOW
    if imbalanced and on_clean:
        b.add_some(imbalance_names, "imbalance",
                   f"largest / smallest class {ratio_words}: plain cross-entropy then favours the head classes "
                   f"(guide, point 5)")
    elif imbalanced:
        shape = p.get("shape", "")
        b.add_some(imbalance_names, "imbalance",
                   f"the largest training class is {ratio:.3g} times the smallest ({shape} profile; the largest "
                   f"{p.get('head_classes', 1)} class(es) hold {pct(p.get('head_share', float('nan')))} of the rows): "
                   f"plain cross-entropy then favours the head classes (guide, point 5)")
    elif on_clean and given_ratio is not None and max(ratio, given_ratio) >= MILD_IMBALANCE:
        notes.append(f"Imbalance: largest / smallest class {ratio_words}; that lower end is below {IMBALANCE_RATIO:g}: no "
                     f"imbalance loss is added; the balanced-accuracy objective already weighs every class alike.")
    elif ratio is not None and ratio >= MILD_IMBALANCE:
        notes.append(f"Mild imbalance (largest / smallest class {ratio:.3g}): below {IMBALANCE_RATIO:g}, no imbalance "
                     f"loss is added; the balanced-accuracy objective already weighs every class alike.")
    model = p.get("quick_model") or {}
    acc = model.get("out_of_sample_accuracy")
    overlap = (f" The quick model's out-of-sample accuracy is {pct(acc)}: where classes overlap, part of this estimate "
               f"is overlap rather than wrong labels, which the sweep settles." if acc is not None and acc < 0.9 else "")
    # imbalance and noise together: the first imbalance loss with the first noise loss that shares its task
    pair = (next(((i, n) for i in imbalance_names[:b.max] for n in noise_names if _share_task(i, n, task)), None)
            if imbalanced and noisy else None)
    if noisy:  # with a combination, it carries the first noise loss (the nested list of the module's docstring)
        pairs = p.get("confused_pairs") or []
        pair_txt = (f"; most often swapped: {', '.join(' and '.join(map(str, q['classes'])) for q in pairs[:2])}"
                    if pairs else "")
        dup = p.get("near_duplicates") or {}
        dup_txt = (f"; {dup['conflicting_groups']} group(s) of near-identical rows carry different labels"
                   if dup.get("conflicting_groups") else "")
        why = (f"about {ci_text(noise)} of the training labels look wrong by confident learning{pair_txt}{dup_txt}; "
               f"a loss that handles label noise bounds what a wrong label can cost (guide, point 5).{overlap}")
        b.add_some(noise_names, "label_noise", why, limit=b.max - 1 if pair else None)
        if pair and b.max == 1:
            notes.append(f"Label noise: {pair[1]} alone is not swept, as the classes are imbalanced too: it enters "
                         f"through the combination with {pair[0]}, which the report sets against {pair[0]} alone. "
                         f"Add it with choose.extra_losses=[{pair[1]}] or choose.max_per_trait=2.")
    elif noise:
        notes.append(f"Label noise: {ci_text(noise)} by confident learning, too little to call for a noise-robust loss.")
    if pair:
        i, n = pair
        b.add("combo", "combination",
              f"both imbalance and label noise are present, and no single loss in the registry declares both traits: "
              f"{i} + {n} lets each answer one (guide, point 4); set against {i} alone, it shows what the noise term "
              f"adds", params={"terms": [{"name": i, "weight": 1.0}, {"name": n, "weight": 1.0}]})


def _share_task(a: str, b: str, task: str) -> bool:
    from ..registry import loss_info, task_fits

    common = set(loss_info(a).tasks) & set(loss_info(b).tasks)
    return bool(common) and task_fits(tuple(common), task)
