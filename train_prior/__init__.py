"""train_prior (see DESIGN.md)."""
