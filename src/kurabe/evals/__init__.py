"""Quality checks of model answers (beyond speed)."""
