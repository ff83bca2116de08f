"""The core: what every stage builds on (config, lake, schemas, text, device, inference, registry).

The core never imports a stage (``finegate.tasks``) or a flow (``finegate.flows``).
"""
