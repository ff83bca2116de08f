from pathlib import Path

from finegate.tasks.register import code_version


def test_code_version_is_the_git_commit() -> None:
    version = code_version()
    assert version == "unknown" or len(version.split("+")[0]) == 40
    assert code_version(Path("/")) == "unknown"


def test_model_card_names_the_data_the_gate_and_the_training() -> None:
    from finegate.core.results import EvaluationResult, FinetuneResult, SnapshotResult
    from finegate.tasks.register import model_card

    snapshot = SnapshotResult(digest="ab" * 32, path="/lake/s", data_path="/lake/s/data",
                              duplicates_path="/lake/s/dup", rows=120, drops=["day1", "day2"])
    trained = FinetuneResult(model_dir="/m", device="cpu", steps=4, train_rows=96,
                             train_loss=0.5, best_validation_macro_f1=0.8, stopped_early=False,
                             resumed_from=0, seconds=3.0, samples_per_second=10.0,
                             params={"max_length": 32, "bf16": False})
    evaluation = EvaluationResult(accuracy=0.9, macro_f1=0.88, test_rows=12, report_path="/e",
                                  golden_macro_f1=0.85, golden_rows=30)
    card = model_card("finegate-classifier", ["sports", "tech"], snapshot,
                      {"class_balance": 0.99, "duplicate_ratio": 0.02, "noise_ratio": 0.01,
                       "quarantine_ratio": 0.05},
                      {"warnings": ["curated_rows: short texts"]}, trained, evaluation)
    assert card.startswith("# finegate-classifier") and "over sports, tech" in card
    assert snapshot.digest in card and "day1, day2" in card
    assert "passed with 1 warning(s)" in card and "short texts" in card
    assert "golden set: macro-F1 0.850 on 30 rows" in card
    assert "max_length: 32" in card and "registered: 20" in card


def test_a_snapshot_is_trained_again_only_with_other_training_settings(tmp_path: Path) -> None:
    from finegate.core.config import Config, TrainConfig
    from finegate.core.registry import SNAPSHOT_TAG, TRAINING_TAG, client, find_registered

    config = Config(lake_path=str(tmp_path))
    registry = client(config.registry)
    registry.create_registered_model(config.model_name)
    registry.create_model_version(config.model_name, source="file:///tmp/m", tags={
        SNAPSHOT_TAG: "d1", TRAINING_TAG: config.train.digest()})
    found = find_registered(config.registry, "d1", config.train.digest())
    assert found is not None and found.version == "1" and not found.decided
    assert find_registered(config.registry, "d2", config.train.digest()) is None  # new data
    other = TrainConfig(cpu_max_steps=120)  # same data, another budget
    assert other.digest() != config.train.digest()
    assert find_registered(config.registry, "d1", other.digest()) is None
