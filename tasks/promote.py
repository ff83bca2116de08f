"""Promote: the challenger becomes champion only if it is not worse, by three rules.

On the golden set (or, without one, the snapshot's test split), both models predict the same
rows. The challenger is promoted when
1. its macro-F1 is not below the champion's by more than ``promotion.tolerance``;
2. no class's recall is below ``promotion.min_class_recall``;
3. an exact McNemar test does not say it is significantly worse (p < ``promotion.alpha``).
The first model is champion by default. The decision, its reasons and numbers are tagged on the
model version and shown as a Prefect artifact. People can override with ``finegate promote``
and ``finegate rollback``; the registered model keeps the champion history as a tag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import task

from finegate.config import Config, PromotionConfig
from finegate.lake import read_json

CHAMPION, CHALLENGER = "champion", "challenger"
HISTORY_TAG = "finegate.champion_history"


@dataclass(frozen=True)
class PromotionDecision:
    """Whether the challenger became champion, and why."""

    promote: bool
    reasons: list[str]
    numbers: dict[str, Any] = field(default_factory=dict)


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


def current_champion(client: Any, name: str) -> str | None:
    """The champion's version, or None when there is none yet.

    Only "no such model / no such alias" means no champion: any other registry error (an
    unreachable server, say) is raised, so a challenger is never crowned by accident.
    """
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def champion_history(client: Any, name: str) -> list[str]:
    """Versions that were champion, oldest first."""
    tags = client.get_registered_model(name).tags
    return [v for v in tags.get(HISTORY_TAG, "").split(",") if v]


def set_champion(client: Any, name: str, version: str) -> None:
    """Make ``version`` the champion and append it to the champion history."""
    client.set_registered_model_alias(name, CHAMPION, version)
    history = champion_history(client, name)
    if history[-1:] != [version]:
        client.set_registered_model_tag(name, HISTORY_TAG, ",".join([*history, version]))


def rollback_champion(client: Any, name: str) -> str:
    """Give the champion alias back to the previous champion; returns its version."""
    history = champion_history(client, name)
    if len(history) < 2:
        raise ValueError(f"model {name} has no earlier champion to roll back to "
                         f"(champion history: {history or 'empty'})")
    client.set_registered_model_alias(name, CHAMPION, history[-2])
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history[:-1]))
    client.set_model_version_tag(name, history[-1], "finegate.promotion",
                                 f"rolled back: champion is version {history[-2]} again")
    return history[-2]


def download_model(client: Any, name: str, version: str) -> tuple[Path, Path]:
    """Local model and tokenizer folders of a registered ``mlflow.transformers`` model."""
    import mlflow

    root = Path(mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{name}/{version}", tracking_uri=client.tracking_uri))
    return root / "model", root / "components" / "tokenizer"


def promote_challenger(config: Config, version: str, report_path: str) -> PromotionDecision:
    """Name the new version challenger, compare it with the champion on the same rows, move
    the champion alias if it wins, and tag why."""
    from mlflow import MlflowClient

    from tasks.evaluate import predict
    from tasks.finetune import pick_device
    from tasks.register import PROMOTION_TAG, mlflow_uri

    uri = mlflow_uri(config)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = config.model_name
    report = read_json(Path(report_path))
    part = report.get("golden") or report["test"]
    client.set_registered_model_alias(name, CHALLENGER, version)
    champion = current_champion(client, name)
    if champion == version:  # a retry after the alias moved: decided already
        return PromotionDecision(True, [f"version {version} is already champion"])
    champion_predictions = None
    if champion is not None:
        device = pick_device(config.train.device)
        length = config.train.cpu_max_length if device == "cpu" else config.train.max_length
        texts = evaluation_texts(config, report)
        model, tokenizer = download_model(client, name, champion)
        champion_predictions = predict(model, texts, length, device, tokenizer_dir=tokenizer)
    decision = decide_promotion(part["truth"], part["predictions"], champion_predictions,
                                config.labels, config.promotion)
    if decision.promote:
        set_champion(client, name, version)
    outcome = "promoted to champion" if decision.promote else f"champion stays {champion}"
    client.set_model_version_tag(name, version, PROMOTION_TAG, outcome)
    client.set_model_version_tag(name, version, "finegate.promotion.reasons",
                                 "; ".join(decision.reasons))
    client.set_model_version_tag(name, version, "finegate.promotion.set",
                                 "golden" if "golden" in report else "test")
    for key, value in decision.numbers.items():
        if isinstance(value, float):
            client.set_model_version_tag(name, version, f"finegate.promotion.{key}",
                                         f"{value:.4f}")
    return decision


def evaluation_texts(config: Config, report: dict[str, Any]) -> list[str]:
    """The texts the challenger was evaluated on (golden set, else the test split)."""
    from tasks.evaluate import read_golden
    from tasks.finetune import read_split

    if "golden" in report:
        return read_golden(config.evaluation.golden_path, config.labels, config.label_aliases)[0]
    return read_split(report["test"]["data_path"], "test")[0]


@task(name="promote", retries=1, retry_delay_seconds=2)
def promote(config: Config, version: str, report_path: str) -> PromotionDecision:
    """Prefect task: champion/challenger decision, shown as an artifact."""
    from prefect.artifacts import create_markdown_artifact

    decision = promote_challenger(config, version, report_path)
    verdict = "promoted to champion" if decision.promote else "not promoted"
    numbers = "\n".join(f"- {k}: {v}" for k, v in decision.numbers.items())
    create_markdown_artifact(
        key="finegate-promotion", description=f"Model version {version}: {verdict}",
        markdown=f"# Version {version}: {verdict}\n\n" + "\n".join(
            f"- {r}" for r in decision.reasons) + (f"\n\n## Numbers\n{numbers}" if numbers else ""))
    return decision
