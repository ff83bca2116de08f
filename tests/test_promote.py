from pathlib import Path

import pytest

from finegate.core.config import PromotionConfig
from finegate.core.registry import (
    CHAMPION,
    champion_history,
    current_champion,
    rollback_champion,
    set_champion,
)
from finegate.core.results import PromotionDecision
from finegate.tasks.promote import decide_promotion, mcnemar_worse_p, promotion_markdown

LABELS = ["a", "b", "c"]
TRUTH = ["a", "b", "c"] * 20
RULES = PromotionConfig(tolerance=0.01, min_class_recall=0.5, alpha=0.05)


def with_errors(n: int, wrong_label: str = "a", only: str | None = None) -> list[str]:
    """TRUTH with the first ``n`` rows (of class ``only``, if given) predicted wrong."""
    predicted, errors = list(TRUTH), 0
    for i, label in enumerate(TRUTH):
        if errors < n and label != wrong_label and (only is None or label == only):
            predicted[i] = wrong_label
            errors += 1
    return predicted


def test_first_model_becomes_champion() -> None:
    decision = decide_promotion(TRUTH, with_errors(30), None, LABELS, RULES)
    assert decision.promote and "first model" in decision.reasons[0]


def test_better_challenger_is_promoted() -> None:
    decision = decide_promotion(TRUTH, with_errors(2), with_errors(8), LABELS, RULES)
    assert decision.promote
    assert decision.numbers["challenger_macro_f1"] > decision.numbers["champion_macro_f1"]


def test_worse_challenger_is_not_promoted() -> None:
    decision = decide_promotion(TRUTH, with_errors(12), with_errors(2), LABELS, RULES)
    assert not decision.promote
    assert any("below the champion's" in r for r in decision.reasons)
    assert any("McNemar" in r for r in decision.reasons)


def test_class_recall_floor_blocks_promotion() -> None:
    # better overall than a champion that is bad everywhere, but class c collapses
    challenger = with_errors(12, wrong_label="a", only="c")
    champion = [p if i % 3 else "c" for i, p in enumerate(with_errors(20))]
    decision = decide_promotion(TRUTH, challenger, champion, LABELS, RULES)
    assert not decision.promote
    assert any("recall below the floor 0.5: c 0.40" in r for r in decision.reasons)


def test_mcnemar_only_counts_disagreements() -> None:
    assert mcnemar_worse_p(TRUTH, TRUTH, TRUTH) == 1.0
    assert mcnemar_worse_p(TRUTH, with_errors(10), TRUTH) < 0.01
    assert mcnemar_worse_p(TRUTH, TRUTH, with_errors(10)) == 1.0


def test_the_promotion_artifact_gives_verdict_reasons_and_numbers() -> None:
    decision = PromotionDecision(False, ["macro-F1 too low"], {"mcnemar_p": 0.01})
    markdown = promotion_markdown("7", decision)
    assert markdown.startswith("# Version 7: not promoted")
    assert "- macro-F1 too low" in markdown and "- mcnemar_p: 0.01" in markdown
    assert "Numbers" not in promotion_markdown("1", PromotionDecision(True, ["first model"]))


def test_manual_promote_and_rollback_keep_history(tmp_path: Path) -> None:
    from finegate.core.config import Config
    from finegate.core.registry import client as registry_client

    client = registry_client(Config(lake_path=str(tmp_path)).registry)
    client.create_registered_model("m")
    assert current_champion(client, "m") is None
    versions = [client.create_model_version("m", source=f"file:///tmp/m{i}").version
                for i in range(3)]
    for version in versions:
        set_champion(client, "m", str(version))
    set_champion(client, "m", "3")  # promoting the champion again changes no history
    assert champion_history(client, "m") == ["1", "2", "3"]
    assert current_champion(client, "m") == "3"
    assert rollback_champion(client, "m") == "2"
    assert str(client.get_model_version_by_alias("m", CHAMPION).version) == "2"
    assert rollback_champion(client, "m") == "1"
    with pytest.raises(ValueError, match="no earlier champion"):
        rollback_champion(client, "m")



class Flaky:
    """A registry client whose ``method`` fails once, right after doing its work, when called
    with ``argument`` (the retried task's first try dies mid-way)."""

    def __init__(self, client, method: str, argument: str) -> None:
        self.client, self.method, self.argument, self.failed = client, method, argument, False

    def __getattr__(self, attribute: str):
        method = getattr(self.client, attribute)
        if attribute != self.method or self.failed:
            return method

        def fail_after(*args, **kwargs):
            result = method(*args, **kwargs)
            if self.argument in args:
                self.failed = True
                raise ConnectionError(f"registry connection lost after {attribute}{args}")
            return result
        return fail_after


@pytest.mark.parametrize(("method", "argument"), [
    ("set_registered_model_alias", CHAMPION),  # the alias moved, nothing else
    ("set_registered_model_tag", "finegate.champion_history"),  # history written, no tags
    ("set_model_version_tag", "finegate.promotion.reasons"),  # some decision tags written
])
def test_a_retried_promotion_moves_the_champion_once_and_records_the_decision(
        tmp_path: Path, monkeypatch, method: str, argument: str) -> None:
    """The first try dies after writing part of the decision; the retry (and a later run that
    finds the version undecided) leave one champion, one history entry and every tag."""
    import json

    from finegate.core.config import Config, LabelSet, TrainConfig
    from finegate.core.registry import PROMOTION_TAG
    from finegate.core.registry import client as registry_client
    from finegate.tasks import promote

    config = Config(lake_path=str(tmp_path))
    client = registry_client(config.registry)
    client.create_registered_model(config.model_name)
    client.create_model_version(config.model_name, source="file:///tmp/m")
    report = tmp_path / "evaluation.json"
    report.write_text(json.dumps({"golden": {"truth": TRUTH, "predictions": TRUTH}}))
    flaky = Flaky(client, method, argument)
    monkeypatch.setattr(promote, "client", lambda settings: flaky)

    def promote_version_1() -> PromotionDecision:
        return promote.promote_challenger(config.registry, "1", str(report), rules=RULES,
                                          train=TrainConfig(), golden_path="",
                                          label_set=LabelSet(tuple(LABELS), {}))

    with pytest.raises(ConnectionError):
        promote_version_1()
    assert flaky.failed
    assert promote_version_1().promote  # the task's retry
    assert promote_version_1().promote  # a later run that finds it undecided
    assert champion_history(client, config.model_name) == ["1"]
    assert current_champion(client, config.model_name) == "1"
    tags = client.get_model_version(config.model_name, "1").tags
    assert tags[PROMOTION_TAG] == "promoted to champion"
    assert tags[f"{PROMOTION_TAG}.set"] == "golden" and tags[f"{PROMOTION_TAG}.reasons"]
    assert len(client.search_model_versions(f"name='{config.model_name}'")) == 1


def test_a_model_is_downloaded_from_its_own_registry_not_the_process_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI to the process (and to every flow a
    worker starts from it): ``models:/`` URIs resolve there. The champion must come from the
    registry the config names (a stack run once scored its queue with another test's model)."""
    from finegate.core.config import Config
    from finegate.core.registry import client as registry_client
    from finegate.core.registry import download_model

    clients = {}
    for name in ("ours", "other"):
        source = tmp_path / f"{name}-model"
        (source / "model").mkdir(parents=True)
        (source / "model" / "which.txt").write_text(name)
        clients[name] = registry_client(Config(lake_path=str(tmp_path / name)).registry)
        clients[name].create_registered_model("m")
        clients[name].create_model_version("m", source=source.as_uri())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", clients["other"].tracking_uri)
    model_dir, _ = download_model(clients["ours"], "m", "1")
    assert (model_dir / "which.txt").read_text() == "ours"
