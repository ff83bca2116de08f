"""Augmentation for rare classes: perturbation operators, upsampling, mixup, and no leak into
evaluation data or the snapshot."""

import hashlib
import json
import math
import random
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from finegate.core.augment import (
    augment_train_rows,
    perturb_text,
    random_deletion,
    random_insertion,
    random_swap,
    synonym_replacement,
    synonyms,
    upsample_indices,
)
from finegate.core.config import AugmentConfig, EvaluationConfig, LabelSet, TrainConfig
from finegate.core.lake import Lake
from finegate.tasks import finetune
from finegate.tasks.evaluate import evaluate_model
from tests.factories import LABELS, TOPIC_WORDS, curate, topic_rows

NEWS = ("The firm said profits rose sharply this year, and the boss told investors that the "
        "company expects strong sales.")


def topic_of(text: str) -> str:
    """The label whose topic words the text uses most."""
    words = [w.strip(".,").lower() for w in text.split()]
    return max(LABELS, key=lambda label: sum(w in TOPIC_WORDS[label] for w in words))


@pytest.fixture
def rare_snapshot(tmp_path: Path) -> str:
    """A snapshot-shaped file whose train split has 30 sports, 30 tech and 4 politics rows."""
    rows = pd.DataFrame(topic_rows(150, seed=11, prefix="r"))
    rows["split"] = ["train", "validation", "test", "train", "train"] * 30
    rare = rows.index[(rows["label"] == "politics") & (rows["split"] == "train")]
    rows = rows.drop(rare[4:])
    path = tmp_path / "rare.parquet"
    rows.to_parquet(path)
    return str(path)


def test_the_shipped_word_list_loads_and_every_synonym_differs_from_its_word() -> None:
    table = synonyms()
    assert len(table) > 300
    assert {"said", "profits", "company", "film", "match", "election"} <= set(table)
    assert all(others and word not in others for word, others in table.items())


def test_each_operator_changes_words_as_named() -> None:
    table, words = synonyms(), NEWS.split()
    rng = random.Random(0)
    replaced = synonym_replacement(words, 3, rng, table)
    changed = [(a, b) for a, b in zip(words, replaced, strict=True) if a != b]
    assert len(changed) == 3
    for old, new in changed:  # a listed synonym, punctuation and capitals kept
        core = old.strip(".,")
        assert new.strip(".,").lower() in table[core.lower()]
        assert new.endswith(",") == old.endswith(",")
    inserted = random_insertion(words, 2, rng, table)
    assert len(inserted) == len(words) + 2
    new_words = list((Counter(inserted) - Counter(words)).elements())
    assert all(any(w in table[k] for k in table) for w in new_words)
    swapped = random_swap(words, 2, rng, table)
    assert Counter(swapped) == Counter(words) and swapped != words
    deleted = random_deletion(words, 4, rng, table)
    assert len(deleted) == len(words) - 4 and not Counter(deleted) - Counter(words)
    assert random_deletion(["one"], 3, rng, table) == ["one"]  # never empties a text


def test_perturbation_is_seeded_and_changes_about_rate_of_the_words() -> None:
    first = [perturb_text(NEWS, random.Random(seed), rate=0.2) for seed in range(20)]
    again = [perturb_text(NEWS, random.Random(seed), rate=0.2) for seed in range(20)]
    assert first == again
    assert all(text != NEWS for text in first)
    assert len(set(first)) > 15  # different seeds, different copies
    n = len(NEWS.split())
    for text in first:  # one operation on ~20% of 20 words: at most 4 added or removed
        assert abs(len(text.split()) - n) <= round(0.2 * n)
    no_synonyms = "xqz wvt plk"
    assert perturb_text(no_synonyms, random.Random(1)) != no_synonyms  # swap/delete still work
    assert perturb_text("alone", random.Random(1)) == "alone"


def test_upsampling_reaches_the_target_share_and_spreads_copies_evenly() -> None:
    labels = ["a"] * 100 + ["b"] * 30 + ["c"] * 7
    for share in (0.5, 1.0):
        extra = upsample_indices(labels, share, random.Random(3))
        counts = Counter(labels) + Counter(labels[i] for i in extra)
        assert counts["a"] == 100  # the largest class is never copied
        assert counts["b"] == counts["c"] == math.ceil(share * 100)
        copies = Counter(i for i in extra if labels[i] == "c")
        assert max(copies.values()) - min(copies.values()) <= 1
    assert Counter(labels[i] for i in upsample_indices(labels, 0.2, random.Random(3))) == {
        "c": 13}  # b is above 20 already
    assert not upsample_indices(labels, 0.05, random.Random(3))
    assert upsample_indices(labels, 0.0, random.Random(3)) == []


def test_augmented_rows_keep_their_label_and_are_deterministic() -> None:
    rows = topic_rows(60, seed=4, prefix="t")
    rows = [r for i, r in enumerate(rows) if r["label"] != "politics" or i < 9]  # 3 politics
    texts, labels = [r["text"] for r in rows], [r["label"] for r in rows]
    settings = AugmentConfig(upsample_to=1.0, perturb=True, perturb_rate=0.1)
    augmented = augment_train_rows(texts, labels, settings, seed=5)
    assert augmented.texts[:len(texts)] == texts and augmented.labels[:len(labels)] == labels
    assert augmented.added == 20 - 3 and Counter(augmented.labels)["politics"] == 20
    added = list(zip(augmented.texts[len(texts):], augmented.labels[len(labels):], strict=True))
    assert all(label == "politics" == topic_of(text) for text, label in added)
    assert all(text not in texts for text, _ in added)  # perturbed, not exact copies
    assert augment_train_rows(texts, labels, settings, seed=5) == augmented
    assert augment_train_rows(texts, labels, settings, seed=6).texts != augmented.texts
    exact = augment_train_rows(texts, labels, AugmentConfig(upsample_to=1.0), seed=5)
    assert all(text in texts for text in exact.texts)


def test_perturbation_without_upsampling_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="upsample_to"):
        AugmentConfig(perturb=True)


def test_training_digest_changes_with_augmentation_and_is_unchanged_without() -> None:
    base = TrainConfig()
    assert base.digest() == "496a0223"  # the digest before augmentation existed: no retraining
    assert TrainConfig(augment=AugmentConfig()).digest() == base.digest()
    digests = {TrainConfig(augment=AugmentConfig(upsample_to=1.0)).digest(),
               TrainConfig(augment=AugmentConfig(upsample_to=0.5)).digest(),
               TrainConfig(augment=AugmentConfig(upsample_to=1.0, perturb=True)).digest(),
               TrainConfig(augment=AugmentConfig(mixup_alpha=0.4)).digest()}
    assert len(digests) == 4 and base.digest() not in digests


def test_augmentation_only_ever_enters_the_train_rows(tiny_model_dir: Path,
                                                      rare_snapshot: str) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    plain = finetune.prepare_data(rare_snapshot, LABELS, tokenizer, 32)
    augmented = finetune.prepare_data(rare_snapshot, LABELS, tokenizer, 32,
                                      AugmentConfig(upsample_to=1.0, perturb=True), seed=3)
    assert plain.augmented_rows == 0 and augmented.augmented_rows == 26
    assert augmented.examples[:len(plain.examples)] == plain.examples
    assert len(augmented.examples) == len(plain.examples) + 26
    assert Counter(augmented.label_names(LABELS)) == {"sports": 30, "tech": 30, "politics": 30}
    assert len(augmented.validation) == len(plain.validation) == 1
    for a, b in zip(augmented.validation, plain.validation, strict=True):
        assert all(a[k].equal(b[k]) for k in b)
    assert len(plain.validation[0]["labels"]) == 30  # every validation row, none added


def file_sums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_augmented_training_leaves_snapshot_test_and_golden_rows_untouched(
        dirty_landing: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    lake = Lake.at(tmp_path / "lake")
    snapshot, _, _ = curate(dirty_landing, lake)
    golden = tmp_path / "golden.jsonl"
    golden.write_text("".join(json.dumps(r) + "\n" for r in topic_rows(12, seed=9, prefix="g")))
    before = file_sums(Path(snapshot.path)) | {"golden": file_sums(tmp_path)["golden.jsonl"]}
    split_rows = json.loads((Path(snapshot.path) / "manifest.json").read_text())["split_rows"]

    train = TrainConfig(model_path=str(tiny_model_dir), device="cpu", cpu_max_length=32,
                        cpu_batch_size=8, cpu_max_steps=3, epochs=1, augment=AugmentConfig(
                            upsample_to=1.0, perturb=True, mixup_alpha=0.4))
    result = finetune.train(snapshot.data_path, LABELS, train, tmp_path / "model")
    assert result.train_rows == split_rows["train"]  # the snapshot's rows, copies counted apart
    assert result.params["augmented_rows"] > 0
    evaluation = evaluate_model(result.model_dir, snapshot.data_path, tmp_path,
                                label_set=LabelSet(tuple(LABELS), {}), train=train,
                                evaluation=EvaluationConfig(golden_path=str(golden)))
    assert evaluation.test_rows == split_rows["test"] and evaluation.golden_rows == 12
    after = file_sums(Path(snapshot.path)) | {"golden": file_sums(tmp_path)["golden.jsonl"]}
    assert after == before  # not a byte of the snapshot (digest, manifest, data) or golden set


def test_mixup_trains_a_real_tiny_model_deterministically(tiny_model_dir: Path,
                                                          rare_snapshot: str,
                                                          tmp_path: Path) -> None:
    from safetensors.torch import load_file

    def run(name: str, augment: AugmentConfig):
        train = TrainConfig(model_path=str(tiny_model_dir), device="cpu", cpu_max_length=32,
                            cpu_batch_size=8, cpu_max_steps=5, epochs=1, augment=augment)
        result = finetune.train(rare_snapshot, LABELS, train, tmp_path / name)
        return result, load_file(tmp_path / name / "model.safetensors")

    mixup = AugmentConfig(upsample_to=1.0, mixup_alpha=0.4)
    result, weights = run("mixup", mixup)
    _, again = run("again", mixup)
    _, plain = run("plain", AugmentConfig(upsample_to=1.0))
    assert result.steps == 5 and math.isfinite(result.train_loss)
    assert result.params["augment_mixup_alpha"] == 0.4 and result.params["augmented_rows"] == 26
    assert all(weights[k].equal(again[k]) for k in weights)  # seeded: the same weights
    assert not all(weights[k].equal(plain[k]) for k in weights)  # mixup changed the training


def test_the_mixup_hook_mixes_the_head_input_in_training_steps_only() -> None:
    import torch

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.classifier = torch.nn.Linear(4, 3)

    model, x = Model(), torch.randn(5, 4)

    def head(inputs: torch.Tensor) -> torch.Tensor:  # the head without hooks
        return torch.nn.functional.linear(inputs, model.classifier.weight, model.classifier.bias)

    mixup = finetune.Mixup(alpha=0.4, seed=1)
    with finetune.mixup_head(model, mixup):
        mixup.at(step=7, rows=5)
        lam, partners = mixup.lam, mixup.partners
        assert 0 < lam < 1 and sorted(partners.tolist()) == list(range(5))
        assert torch.allclose(model.classifier(x), head(lam * x + (1 - lam) * x[partners]))
        assert not torch.allclose(model.classifier(x), head(x))
        mixup.lam = None  # between steps (validation): unmixed
        assert torch.equal(model.classifier(x), head(x))
    assert not model.classifier._forward_pre_hooks  # the hook is gone after training


def test_a_killed_mixup_run_resumes_to_the_same_weights(tiny_model_dir: Path, rare_snapshot: str,
                                                        tmp_path: Path) -> None:
    from safetensors.torch import load_file

    class Killed(RuntimeError):
        pass

    def kill_at_5(step: int, total: int, loss: float) -> None:
        if step == 5:
            raise Killed

    train = TrainConfig(model_path=str(tiny_model_dir), device="cpu", cpu_max_length=32,
                        cpu_batch_size=8, cpu_max_steps=8, epochs=2, checkpoint_every=3,
                        augment=AugmentConfig(upsample_to=1.0, perturb=True, mixup_alpha=0.4))
    finetune.train(rare_snapshot, LABELS, train, tmp_path / "straight")
    with pytest.raises(Killed):  # dies at step 5, resumes from the step-3 checkpoint
        finetune.train(rare_snapshot, LABELS, train, tmp_path / "killed", on_progress=kill_at_5)
    assert finetune.train(rare_snapshot, LABELS, train, tmp_path / "killed").resumed_from == 3
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "model.safetensors")
    assert all(a[k].equal(b[k]) for k in a)  # the same mixup draws after the resume
