"""The MLflow model registry, as every stage and the CLI use it: one client, the tags a version
carries, the champion/challenger aliases and the champion history.

A version is tagged with the snapshot and training digests it was trained from, so an unchanged
snapshot with unchanged settings is never trained twice. The champion history is a tag on the
registered model (oldest first), so ``finegate rollback`` knows whom to give the alias back to.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from finegate.core.config import RegistrySettings
from finegate.core.results import RegisterResult

SNAPSHOT_TAG = "finegate.snapshot_digest"
TRAINING_TAG = "finegate.training_digest"  # TrainConfig.digest() of the training settings
EVALUATION_TAG = "finegate.evaluation_report"
PROMOTION_TAG = "finegate.promotion"  # set once the champion/challenger decision is made
HISTORY_TAG = "finegate.champion_history"
CHAMPION, CHALLENGER = "champion", "challenger"


def mlflow_uri(settings: RegistrySettings) -> str:
    """The tracking URI to hand to MLflow, without credentials.

    MLflow prints its URI in logs ("View run at ..."), so credentials written in the configured
    URI move to MLflow's variables of this process instead: ``https://user:password@host`` to
    ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``, ``https://token@host`` to
    ``MLFLOW_TRACKING_TOKEN``.
    """
    uri = settings.tracking_uri.get_secret_value()
    parts = urlsplit(uri)
    if not (parts.username or parts.password):
        return uri
    if parts.password is None:
        os.environ["MLFLOW_TRACKING_TOKEN"] = unquote(parts.username)
    else:
        os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(parts.username or "")
        os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(parts.password)
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port
                                                               else "")))


def client(settings: RegistrySettings) -> Any:
    """An ``MlflowClient`` for tracking and registry at the configured URI."""
    from mlflow import MlflowClient

    uri = mlflow_uri(settings)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(settings: RegistrySettings) -> str:
    """The experiment's id, created on first use (with the default SQLite store its artifacts
    live inside the lake: ``settings.artifact_location``)."""
    registry = client(settings)
    experiment = registry.get_experiment_by_name(settings.experiment)
    if experiment is not None:
        return experiment.experiment_id
    return registry.create_experiment(settings.experiment,
                                    artifact_location=settings.artifact_location)


def find_registered(settings: RegistrySettings, snapshot_digest: str,
                    training_digest: str) -> RegisterResult | None:
    """The model version already trained on this snapshot with these training settings, if
    there is one (changed settings train a new version on the same data)."""
    registry, name = client(settings), settings.model_name
    # An unreachable registry raises: "not found" must never be guessed (it would retrain).
    versions = registry.search_model_versions(f"name='{name}'")
    for version in sorted(versions, key=lambda v: int(v.version), reverse=True):
        tags = version.tags
        if (tags.get(SNAPSHOT_TAG), tags.get(TRAINING_TAG)) == (snapshot_digest, training_digest):
            found = registry.get_model_version(name, version.version)  # search omits aliases
            return RegisterResult(tracking_uri=settings.public_uri, run_id=found.run_id,
                                  model_name=name, version=str(found.version),
                                  aliases=sorted(found.aliases),
                                  evaluation_report=found.tags.get(EVALUATION_TAG),
                                  decided=PROMOTION_TAG in found.tags)
    return None


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
    client.set_model_version_tag(name, history[-1], PROMOTION_TAG,
                                 f"rolled back: champion is version {history[-2]} again")
    return history[-2]


def download_model(client: Any, name: str, version: str) -> tuple[Path, Path]:
    """Local model and tokenizer folders of a registered ``mlflow.transformers`` model."""
    from mlflow.artifacts import download_artifacts

    # the version's own storage URI, not ``models:/``: that one is resolved against the
    # process-wide registry URI (``MLFLOW_TRACKING_URI``, which mlflow.set_tracking_uri exports),
    # i.e. possibly another registry than ``client``'s
    source = client.get_model_version_download_uri(name, version)
    root = Path(download_artifacts(artifact_uri=source, tracking_uri=client.tracking_uri))
    return root / "model", root / "components" / "tokenizer"
