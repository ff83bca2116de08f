"""The stages of the nightly flow, one module per stage."""
