"""One trial on Ray: the Tune-side driver (driver), the Train worker loop (entry, worker), resume state (resume),
confirmation and final-fit re-runs (rerun) and the GPU memory estimate that packs trials (memory)."""
