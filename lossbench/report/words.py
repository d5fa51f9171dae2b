"""Every sentence of the report, in one place: the structured verdicts, reasons, flags and
findings of the analysis turned into English, and the numbers formatted the one way they are shown."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .compare import AcrossScenarios, Disagreement
from .ranking import FlagKind, LossResult, Standing, VariantStats
from .recommend import NOTES, ComboResult, ComboVerdict, Reason, ScenarioResult, Verdict, Why

if TYPE_CHECKING:
    from .scenarios import TraitFinding

SECTION_TITLES = (
    "1. Task and loss family",
    "2. Normalisation",
    "3. Empirical ranking",
    "4. Combining losses",
    "5. Traits of the data: the recommendation",
    "Appendix: each loss and its gradient",
)
VERDICT_WORDS = {
    Verdict.SIGNIFICANT: "significantly best",
    Verdict.TIE: "no significant difference: simplest of the tied losses",
    Verdict.TOO_FEW_SEEDS: "too few seeds to tell: no winner claimed",
    Verdict.ONLY_ONE: "only one loss finished",
    Verdict.ALL_FAILED: "every run failed: no recommendation",
}
TRAIT_WORDS = {
    "robust_to_outliers": "robust to outliers",
    "bounded_influence": "bounded influence (a bounded gradient)",
    "convex": "convex",
    "handles_imbalance": "built for class imbalance",
    "handles_label_noise": "tolerant of label noise",
    "calibrated": "calibrated probabilities",
}
TRAIT_PREDICATES = {
    "robust_to_outliers": "is robust to outliers",
    "bounded_influence": "has a bounded gradient (bounded influence)",
    "convex": "is convex",
    "handles_imbalance": "is built for class imbalance",
    "handles_label_noise": "tolerates label noise",
    "calibrated": "gives calibrated probabilities",
}
DATA_TRAIT_WORDS = {"outlier_fraction": "outliers", "imbalance_ratio": "class imbalance", "label_noise": "label noise"}
TRAIT_PHRASES = {"outlier_fraction": "{} outliers", "imbalance_ratio": "an imbalance ratio of {}",
                 "label_noise": "{} noisy labels"}
STANDING_PHRASES = {
    Standing.BEST: "scored best but not significantly better",
    Standing.TIED: "did not differ significantly",
    Standing.WORSE: "did significantly worse",
    Standing.NOT_COMPARED: "could not be compared (too few seeds)",
    Standing.ALL_FAILED: "failed in every run",
}
FAMILY_WHY = {
    "distance-based": "The targets are real numbers, so an error is a distance between the prediction and the target: "
    "distance-based losses (squared, absolute, Huber-type) were compared.",
    "probability-based": "The model outputs a probability for each class, so its error is the gap between that "
    "predicted distribution and the true label: probability-based losses (cross-entropy and its variants) were "
    "compared.",
    "unknown": "The task was not logged, so the family of losses cannot be checked.",
}
METHOD = (
    "Each seed is one repetition on the same data for every loss (same seed = same data split and noise).",
    "A loss run with several hyperparameter values is represented by its best variant, chosen by the mean "
    "validation objective (best_val_objective): the validation split, never the test split, picks the variant.",
    "Losses are ranked by the mean test objective of their chosen variant, with a 95% confidence interval from "
    "the t-distribution over seeds.",
    "Each loss is compared with the best one by a paired t-test over the seeds both finished; the p-values within "
    "a scenario are Holm-corrected. A loss is significantly worse when its adjusted p-value is below alpha; "
    "otherwise it is tied with the best.",
    "When no loss is significantly best, the simplest tied loss that ran reliably is recommended: never failed, "
    "fewer hyperparameters, then the fixed order mse, l1, cross_entropy, bce, ...",
    "Failed runs count against a loss: divergences and errors are listed and flagged; a loss whose runs all "
    "failed ranks last. With fewer than two finished seeds no winner is claimed.",
)
NORMALISATION_EXPLAINED = (
    "Features are normalised with statistics fitted on the training split only; regression targets are trained "
    "normalised and every metric is reported back in the targets' original units."
)
NORMALISATION_NOT_SWEPT = (
    "Normalisation was not swept, so its effect was not measured. To measure it, sweep it like any other setting, "
    "e.g. `python -m lossbench -m data.normalize=standard,robust,none seed=0,1,2`."
)
NORMALISATION_NOT_LOGGED = "The runs do not log data.normalize, so how the data were normalised is unknown. "
COMBO_HOW = (
    "To test a combination, run it next to its parts, e.g. `python -m lossbench -m 'loss=combo' "
    "'loss.terms=[{name: mse, weight: 0.5}, {name: l1, weight: 0.5}]' seed=0,1,2` and the same sweep with loss=mse,l1."
)
COMBO_NONE = "No combination (loss=combo) was run in this experiment. "
# figures: (title, caption); {} fields filled by the caller
FIGURES = {
    "ranking": ("Test objective per loss",
                "Mean and 95% CI over seeds of each loss's chosen variant; the recommended loss in green."),
    "recall": ("Per-class test recall",
               "Mean over seeds of each loss's chosen variant; minority classes show what imbalance costs."),
    "axis": ("{data}: test_{objective} against {axis}",
             "Each loss's chosen variant per scenario, mean and 95% CI over seeds{fixed}."),
    "curves": ("Training curves: val_{objective} per epoch{part}",
               "One panel per scenario; one run per loss: its chosen variant's lowest finished seed."),
    "sensitivity": ("Sensitivity to the swept hyperparameters: test_{objective}{part}",
                    "One panel per loss and hyperparameter; each point is one variant in one scenario (mean and 95% CI "
                    "over seeds), one line per scenario. Where other settings were swept too, variants sharing a value "
                    "differ in those."),
    "appendix-regression": (
        "Regression losses and their gradients against the residual",
        "L1's gradient is constant in size however small the error; MSE's grows with the residual, so outliers "
        "dominate; Huber-type losses are quadratic near zero and cap the gradient beyond.{rmse}"),
    "appendix-classification": (
        "Classification losses and their gradients against the true-class probability",
        "Two classes, true class 0, logits [s, 0]; losses needing class counts get balanced counts. Focal loss's "
        "gradient vanishes for easy examples (p near 1), down-weighting them against cross-entropy."),
}
APPENDIX_SKIPPED = {
    "unregistered": "not registered in this installation (a plugin that is not installed?)",
    "no_axis": "its task ({tasks}) has no residual or class probability to plot",
    "failed": "could not be built or evaluated here ({error})",
}
RMSE_APPENDIX = " Per sample, rmse is |r| and overlaps l1; over a batch its gradient is r / RMSE."


# --------------------------------------------------------------------------- numbers
def num(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.4g}"


def ci_text(v: VariantStats) -> str:
    """The interval as a table shows it: ``[lo, hi]``, ``(1 seed)`` or ``n/a``."""
    m, lo, hi = v.ci
    return "n/a" if math.isnan(m) else "(1 seed)" if math.isnan(lo) else f"[{num(lo)}, {num(hi)}]"


def ci_sentence(v: VariantStats) -> str:
    """The mean and interval as a sentence says it."""
    m, lo, hi = v.ci
    if math.isnan(lo):
        return f"{num(m)} (1 seed, no interval)"
    return f"{num(m)} [95% CI {num(lo)}, {num(hi)}] over {v.n_finished} seeds"


def diff_text(diff: float, scale: float) -> str:
    """A difference of means; rounding noise (a few ulps of the values) shows as 0."""
    return "0" if abs(diff) <= 1e-12 * max(1.0, abs(scale)) else num(diff)


def p_text(p: float) -> str:
    return "n/a" if math.isnan(p) else "< 0.001" if p < 0.001 else f"{p:.3f}"


def direction(mode: str) -> str:
    return "higher is better" if mode == "max" else "lower is better"


def failures_text(counts: Mapping[str, int]) -> str:
    failed = [f"{counts[k]} {k}" for k in ("diverged", "error", "killed", "incomplete") if counts.get(k)]
    return ", ".join(failed) or "none"


def facts(traits: Mapping[str, float], sep: str = ": ") -> list[str]:
    return [f"{k.replace('_', ' ')}{sep}{v:.3g}" for k, v in traits.items() if not math.isnan(v)]


# --------------------------------------------------------------------------- ranking
FLAG_WORDS = {
    FlagKind.DIVERGED: "diverged in {count} of {of} seeds",
    FlagKind.ERROR: "failed with an error in {count} of {of} seeds",
    FlagKind.KILLED: "killed in {count} of {of} seeds",
    FlagKind.INCOMPLETE: "unfinished or without a test metric in {count} of {of} seeds",
    FlagKind.RERUN: "{count} failed run(s) of a seed that also finished in a re-run",
    FlagKind.ONE_SEED: "only 1 seed finished",
    FlagKind.NOT_COMPARED: "not compared: {count} seed(s) finished alongside the best, 2 needed",
    FlagKind.ALL_FAILED: "all runs failed",
}


def flags(r: LossResult) -> tuple[str, ...]:
    return tuple(FLAG_WORDS[f.kind].format(count=f.count, of=f.of) for f in r.flags)


def evidence(s: ScenarioResult) -> str:
    """The recommendation's evidence, one paragraph."""
    return "".join(_reason(s, r) for r in s.recommendation.reasons if r.why not in NOTES)


def notes(s: ScenarioResult) -> tuple[str, ...]:
    """What the reader should know beside the verdict, one sentence each."""
    return tuple(_reason(s, r) for r in s.recommendation.reasons if r.why in NOTES)


def _reason(s: ScenarioResult, r: Reason) -> str:
    rec, objective, w = s.recommendation, s.objective, r.why
    if w is Why.NO_TEST_METRIC:
        return (f"No run has a finished test {objective} (runs still going, or without that metric), so there is "
                f"nothing to rank yet: wait for the runs to finish, or check that test_{objective} is logged.")
    if w is Why.EVERY_RUN_FAILED:
        return ("Every run of every loss failed, so there is nothing to recommend: see the failures below "
                "(lower the learning rate, or check the data).")
    if w in (Why.ONLY_ONE_RAN, Why.OTHERS_ALL_FAILED):
        loss = r.losses[0]
        why = (f"{loss} is the only loss with finished runs (the others all failed)" if w is Why.OTHERS_ALL_FAILED
               else f"{loss} is the only loss that was run, so nothing was compared")
        return f"{why}: test {objective} {ci_sentence(s.by_loss(loss).chosen)}."
    if w is Why.ADD_SEEDS:
        return " Add seeds (seed=0,1,2) for a confidence interval."
    if w in (Why.BEST_TOO_FEW_SEEDS, Why.NONE_COMPARABLE):
        why = (f"only {r.n} seed of the best-scoring loss ({r.losses[0]}) finished" if w is Why.BEST_TOO_FEW_SEEDS
               else "no other loss finished at least two of the same seeds as the best")
        return (f"Too few seeds to tell the losses apart ({why}), so no winner is claimed: the ranking is indicative "
                f"only; {rec.loss}, the simplest loss that ran, is a reasonable default until you add seeds (e.g. "
                f"seed=0,1,2) and re-run.")
    if w is Why.ALL_OTHERS_WORSE:
        best, ru = (s.by_loss(x).chosen for x in r.losses)
        p = "< 0.001" if r.value < 0.001 else f"<= {r.value:.3f}"
        return (f"{best.label} had the {'highest' if s.mode == 'max' else 'lowest'} test {objective}, "
                f"{ci_sentence(best)}, significantly better than every other loss (paired t-test over seeds, "
                f"Holm-adjusted p {p} in every comparison; runner-up {ru.label} at {num(ru.mean)}).")
    if w is Why.NO_SIGNIFICANT_DIFFERENCE:
        best = s.by_loss(rec.best).chosen
        which = (f"{rec.loss} is recommended as the simplest of them that ran reliably." if rec.loss != rec.best
                 else f"{rec.loss} is both the best-scoring and the simplest reliable one.")
        return (f"No significant difference between {', '.join(r.losses)} (paired t-test over seeds, Holm-adjusted "
                f"p >= {s.alpha:g} against the best-scoring {rec.best}, test {objective} {ci_sentence(best)}); {which}")
    if w is Why.BETTER_ON_EVERY_SEED:
        more = ",".join(str(i) for i in range(max(10, 2 * r.n)))
        return (f" Note: {r.losses[0]} scored better than {r.losses[1]} on every one of the {r.n} shared seeds "
                f"(by {num(r.value)} {objective} on average), which {r.n} seeds cannot show to be significant; add "
                f"seeds (seed={more}) to decide.")
    if w is Why.SOME_ALL_FAILED:
        return f"All runs failed for: {', '.join(r.losses)}."
    if w is Why.BEST_FAILED_SOMETIMES:
        return f"Caution: {r.losses[0]} {', '.join(flags(s.by_loss(r.losses[0])))}."
    assert w is Why.KEPT_UNCOMPARED, w
    return (f"Could not be compared (fewer than two seeds finished alongside the best): {', '.join(r.losses)}; "
            "they are kept in the tied group because they were not shown to be worse.")


# --------------------------------------------------------------------------- combinations, traits
def combo_verdict(c: ComboResult) -> str:
    if c.verdict is ComboVerdict.NO_PART_RUN:
        names = [p.name for p in c.parts]
        return (f"None of the terms ({', '.join(names)}) was run on its own in this scenario, so the combination "
                f"cannot be compared with its parts: run them too (loss=combo,{','.join(c.not_run)}).")
    if c.verdict is ComboVerdict.NO_FINISHED_RUN:
        return "The combination has no finished run, so it cannot be compared with its parts."
    best, p = c.best.result.chosen.label, p_text(c.best.test.p_adjusted)
    text = {
        ComboVerdict.BETTER: f"The combination beat its best part, {best}, significantly (Holm-adjusted p {p}).",
        ComboVerdict.BETTER_NOT_SIGNIFICANT: f"The combination scored better than its best part, {best}, but not "
        f"significantly (Holm-adjusted p {p}): the extra term is not worth its hyperparameter here.",
        ComboVerdict.NOT_BETTER: f"The combination did not beat its best part, {best}.",
    }[c.verdict]
    return text + (f" Not run alone: {', '.join(c.not_run)}." if c.not_run else "")


def trait_link(s: ScenarioResult, known: Mapping[str, float], findings: Sequence[TraitFinding]) -> str:
    """How the recommended loss's traits answer the data's (``findings``: the traits that stand out)."""
    rec = s.recommendation
    if rec.loss is None:
        return "No loss is recommended, so nothing links to the data's traits."
    if not known:
        return ("The data's traits (outlier fraction, imbalance ratio, label noise) were not logged, so the choice "
                "cannot be linked to them.")
    sentences = []
    for f in findings:
        shown = f"{f.value:g}:1" if f.key == "imbalance_ratio" else f"{f.value:.{0 if f.value >= 0.1 else 1}%}"
        has, trait = "The data has " + TRAIT_PHRASES[f.key].format(shown), DATA_TRAIT_WORDS[f.key]
        if f.matching:
            fits = " and ".join(TRAIT_PREDICATES.get(t, t) for t in f.matching)
            sentences.append(f"{has}; {rec.loss} {fits}, which fits.")
        elif not f.fitting:
            sentences.append(f"{has}, but no loss built for {trait} was run: add one "
                             "(see `python -m lossbench.losses`) to see whether it helps.")
        else:
            how = "; ".join(f"{n} {STANDING_PHRASES.get(st, st)}" for n, st in f.fitting)
            sentences.append(f"{has}, yet {rec.loss}, which is not built for {trait}, is recommended; of the losses "
                             f"built for it, {how}.")
    text = " ".join(sentences) or (
        f"No outliers, class imbalance or label noise stand out in this data ({', '.join(facts(known, ' '))}), "
        "so no trait of the data calls for a special loss: the choice rests on the ranking alone.")
    if rec.verdict is Verdict.TOO_FEW_SEEDS:
        return "Too few seeds: what follows is indicative, not evidence. " + text
    return text


def figure(kind: str, **fields: Any) -> tuple[str, str]:
    title, caption = FIGURES[kind]
    return title.format(**fields), caption.format(**fields)


# --------------------------------------------------------------------------- metrics that disagree
METRIC_REWARDS = {
    "rmse": "RMSE squares each error before averaging, so the largest errors weigh most: a loss that fits the "
    "outliers wins it",
    "mse": "MSE squares each error, so the largest errors weigh most: a loss that fits the outliers wins it",
    "mae": "MAE weighs each error by its size, so a gross error counts in proportion, neither squared nor ignored",
    "median_ae": "median absolute error is the error of the typical point: it ignores the worst half of the errors, "
    "so gross errors do not move it and a loss that fits the bulk of the data wins it",
    "r2": "R² is one minus MSE over the target's variance, so like MSE it weighs the largest errors most",
    "balanced_accuracy": "balanced accuracy averages the recall of each class, so a rare class counts as much as a "
    "common one: a loss that gets the minority classes right wins it",
    "accuracy": "accuracy counts correct predictions, so the common classes dominate it: a loss that favours them "
    "wins it",
    "macro_f1": "macro F1 averages each class's F1, the balance of its precision and recall, with every class alike",
    "nll": "negative log-likelihood scores the probability given to the true class: it rewards calibrated "
    "probabilities and punishes a confident mistake hard, whichever class is predicted",
    "ece": "expected calibration error asks whether the stated confidence matches the accuracy, not whether the "
    "prediction is right",
    "auroc": "AUROC asks how well the scores put positives above negatives, over every threshold",
}


def disagreement_text(d: Disagreement) -> str:
    """Which metric names which winner, and that the objective decides the recommendation."""
    by_winner: dict[tuple[str, ...], list[str]] = {}
    for m, w in d.winners.items():
        by_winner.setdefault(w, []).append(m)
    parts = [f"{' and '.join(w)} by {', '.join(ms)}" for w, ms in by_winner.items()]
    return (f"The main test metrics disagree on the best loss: {'; '.join(parts)}. The ranking above and the "
            f"recommendation follow the objective, {d.objective}; if another metric matches what an error costs you, "
            f"rank by it with data.objective=<metric>.")


def metric_rewards(d: Disagreement) -> tuple[str, ...]:
    """What each metric of the disagreement rewards, one sentence each."""
    return tuple(f"{m.metric}: {METRIC_REWARDS[m.metric]}." for m in d.rankings if m.metric in METRIC_REWARDS)


# --------------------------------------------------------------------------- ranks across scenarios
ACROSS_METHOD = (
    "Each loss is ranked within each scenario by that scenario's mean test objective (1 = best; ties share the "
    "average rank), and the ranks are averaged over scenarios. Only losses that finished in every compared "
    "scenario are ranked. Friedman's test asks whether the mean ranks differ more than chance would make them; "
    "only where it does, Nemenyi's post-hoc test calls two losses different when their mean ranks differ by more "
    "than the critical difference CD (Demšar, \"Statistical Comparisons of Classifiers over Multiple Data Sets\", "
    "JMLR 7, 2006)."
)


def across_text(a: AcrossScenarios, names: Mapping[str, str]) -> str:
    """What the ranks across scenarios show, or why they cannot be tested."""
    n, k = len(a.scenarios), len(a.losses)
    left = []
    if a.left_out_losses:
        left.append(f"not ranked, as they did not finish in every compared scenario: {', '.join(a.left_out_losses)}")
    if a.left_out_scenarios:
        left.append("scenarios left out, with fewer than two finished losses: "
                    + ", ".join(names.get(s, s) for s in a.left_out_scenarios))
    tail = "; ".join(left)
    tail = f" {tail[:1].upper()}{tail[1:]}." if tail else ""
    if k < 2:
        return f"No two losses finished in all {n} scenarios, so there is nothing to rank across them.{tail}"
    if a.test is None:
        return (f"Friedman's test needs at least 3 scenarios and 3 losses; here there are {n} scenario(s) and {k} "
                f"loss(es), so the mean ranks are shown but not tested: run the same losses on more scenarios to "
                f"tell them apart.{tail}")
    t = a.test
    head = (f"Friedman's test over {n} scenarios and {k} losses: chi-square = {t.statistic:.3g}, p = {p_text(t.p)}")
    if not a.significant:
        return (f"{head} (>= {a.alpha:g}): no evidence that the losses rank differently across these scenarios, so "
                f"no post-hoc test is read; {a.losses[0]}'s best mean rank ({a.mean_rank[a.losses[0]]:.3g}) may be "
                f"chance.{tail}")
    pairs = "; ".join(f"{x} ranks better than {y} ({a.mean_rank[x]:.3g} against {a.mean_rank[y]:.3g})"
                      for x, y in a.different)
    post = (f"By Nemenyi's test (CD = {t.cd:.3g} at alpha {a.alpha:g}): {pairs}." if pairs else
            f"Yet no two mean ranks differ by more than Nemenyi's CD = {t.cd:.3g}, so no pair can be told apart: "
            f"more scenarios would narrow it.")
    return f"{head} (< {a.alpha:g}): the losses rank differently across these scenarios. {post}{tail}"
