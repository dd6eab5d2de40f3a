"""One trial, from the Tune-side study down to the pure-torch engine (see README: What one study does)."""
