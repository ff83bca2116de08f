"""Prefect flows: the nightly DAG and its deployments."""
