"""Training: objectives per model family, data loading from manifests, and the resumable trainer."""
