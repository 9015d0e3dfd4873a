"""Speed shootout: decide what to send, in which order, and store what came back."""
