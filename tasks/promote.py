"""Promote: the challenger becomes champion only if it is not worse, by three rules.

On the golden set (or, without one, the snapshot's test split), both models predict the same
rows. The challenger is promoted when
1. its macro-F1 is not below the champion's by more than ``promotion.tolerance``;
2. no class's recall is below ``promotion.min_class_recall``;
3. an exact McNemar test does not say it is significantly worse (p < ``promotion.alpha``).
The first model is champion by default. The decision, its reasons and numbers are tagged on the
model version (and :func:`promotion_markdown` writes them for the Prefect artifact). People can
override with ``finegate promote`` and ``finegate rollback``; the registered model keeps the
champion history as a tag (``finegate.core.registry``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finegate.core.config import LabelSet, PromotionConfig, RegistrySettings, TrainConfig
from finegate.core.device import eval_max_length, pick_device
from finegate.core.inference import predict, read_golden, read_split
from finegate.core.lake import read_json
from finegate.core.registry import (
    CHALLENGER,
    PROMOTION_TAG,
    client,
    current_champion,
    download_model,
    set_champion,
)
from finegate.core.results import PromotionDecision


def mcnemar_worse_p(truth: list[str], challenger: list[str], champion: list[str]) -> float:
    """One-sided exact McNemar p-value for "the challenger is worse than the champion"."""
    from scipy.stats import binomtest

    champion_only = sum(c == t and h != t for t, h, c in zip(truth, challenger, champion,
                                                             strict=True))
    challenger_only = sum(h == t and c != t for t, h, c in zip(truth, challenger, champion,
                                                               strict=True))
    discordant = champion_only + challenger_only
    if discordant == 0:
        return 1.0
    return float(binomtest(champion_only, discordant, 0.5, alternative="greater").pvalue)


def decide_promotion(truth: list[str], challenger: list[str], champion: list[str] | None,
                     labels: list[str], rules: PromotionConfig) -> PromotionDecision:
    """Apply the promotion rules to both models' predictions on the same rows."""
    from sklearn.metrics import f1_score, recall_score

    if champion is None:
        return PromotionDecision(True, ["first model: no champion yet"])
    new = float(f1_score(truth, challenger, labels=labels, average="macro", zero_division=0))
    old = float(f1_score(truth, champion, labels=labels, average="macro", zero_division=0))
    recalls = dict(zip(labels, recall_score(truth, challenger, labels=labels, average=None,
                                            zero_division=0).tolist(), strict=True))
    p_value = mcnemar_worse_p(truth, challenger, champion)
    numbers = {"challenger_macro_f1": new, "champion_macro_f1": old, "mcnemar_p": p_value,
               "challenger_recall": recalls, "rows": len(truth)}
    present = set(truth)
    low = {c: r for c, r in recalls.items() if c in present and r < rules.min_class_recall}
    failures = []
    if new < old - rules.tolerance:
        failures.append(f"macro-F1 {new:.3f} is below the champion's {old:.3f} by more than "
                        f"{rules.tolerance}")
    if low:
        failures.append("recall below the floor "
                        f"{rules.min_class_recall}: " + ", ".join(f"{c} {r:.2f}"
                                                               for c, r in low.items()))
    if p_value < rules.alpha:
        failures.append(f"McNemar test: significantly worse (p={p_value:.4f} < {rules.alpha})")
    if failures:
        return PromotionDecision(False, failures, numbers)
    return PromotionDecision(True, [f"macro-F1 {new:.3f} vs champion {old:.3f}, lowest recall "
                                    f"{min(recalls.values()):.2f}, McNemar p={p_value:.3f}"],
                             numbers)


def promote_challenger(settings: RegistrySettings, version: str, report_path: str, *,
                       rules: PromotionConfig, train: TrainConfig, label_set: LabelSet,
                       golden_path: str) -> PromotionDecision:
    """Name the new version challenger, compare it with the champion on the rows it was
    evaluated on (``report_path``: its evaluation.json), move the champion alias if it wins,
    and tag why. ``train`` says on which device and at which length the champion predicts."""
    registry, name = client(settings), settings.model_name
    report = read_json(Path(report_path))
    part = report.get("golden") or report["test"]
    registry.set_registered_model_alias(name, CHALLENGER, version)
    champion = current_champion(registry, name)
    if champion == version:  # a retry after the alias moved: finish what the first try left
        return finish_promotion(registry, name, version,
                                evaluated_on="golden" if "golden" in report else "test")
    champion_predictions = None
    if champion is not None:
        device = pick_device(train.device)
        texts = evaluation_texts(report, golden_path, label_set)
        model, tokenizer = download_model(registry, name, champion)
        champion_predictions = predict(model, texts, eval_max_length(train, device), device,
                                       tokenizer_dir=tokenizer)
    decision = decide_promotion(part["truth"], part["predictions"], champion_predictions,
                                list(label_set.labels), rules)
    if decision.promote:
        set_champion(registry, name, version)
    outcome = "promoted to champion" if decision.promote else f"champion stays {champion}"
    tag_decision(registry, name, version, decision, outcome,
                 evaluated_on="golden" if "golden" in report else "test")
    return decision


def finish_promotion(registry: Any, name: str, version: str,
                     evaluated_on: str) -> PromotionDecision:
    """A retry of a promotion that moved the champion alias and then failed: complete the
    champion history and the decision tags (each only once), move nothing else."""
    set_champion(registry, name, version)  # appends to the history only if it is missing
    decision = PromotionDecision(True, [f"version {version} is already champion"])
    if PROMOTION_TAG not in registry.get_model_version(name, version).tags:
        tag_decision(registry, name, version, decision, "promoted to champion", evaluated_on)
    return decision


def tag_decision(registry: Any, name: str, version: str, decision: PromotionDecision,
                 outcome: str, evaluated_on: str) -> None:
    """Record the reasons, the rows compared on, the numbers and, last, the outcome on the
    version (the outcome tag marks the version decided, so it is written only when the rest is)."""
    registry.set_model_version_tag(name, version, f"{PROMOTION_TAG}.reasons",
                                   "; ".join(decision.reasons))
    registry.set_model_version_tag(name, version, f"{PROMOTION_TAG}.set", evaluated_on)
    for key, value in decision.numbers.items():
        if isinstance(value, float):
            registry.set_model_version_tag(name, version, f"{PROMOTION_TAG}.{key}",
                                           f"{value:.4f}")
    registry.set_model_version_tag(name, version, PROMOTION_TAG, outcome)


def evaluation_texts(report: dict[str, Any], golden_path: str,
                     label_set: LabelSet) -> list[str]:
    """The texts the challenger was evaluated on (golden set, else the test split)."""
    if "golden" in report:  # without the golden rows found in the snapshot (leaked)
        leaked = set(report["golden"].get("excluded_rows", []))
        return [t for i, t in enumerate(read_golden(golden_path, label_set)[0])
                if i not in leaked]
    texts = read_split(report["test"]["data_path"], "test")[0]
    scored = report["test"].get("rows_scored")  # a CPU evaluation scores a capped sample
    return texts if scored is None else [texts[i] for i in scored]


def promotion_markdown(version: str, decision: PromotionDecision) -> str:
    """The decision as Markdown: verdict, reasons and numbers (for the Prefect artifact)."""
    verdict = "promoted to champion" if decision.promote else "not promoted"
    numbers = "\n".join(f"- {k}: {v}" for k, v in decision.numbers.items())
    return (f"# Version {version}: {verdict}\n\n" + "\n".join(f"- {r}" for r in decision.reasons)
            + (f"\n\n## Numbers\n{numbers}" if numbers else ""))
