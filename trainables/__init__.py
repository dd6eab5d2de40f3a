"""One trial, from the Tune-side driver down to the pure-torch engine: the engine, metrics, checkpoint, pretrained
weights and run settings at the top; the data path (data/), the MLflow record (tracking/) and the trial on Ray (trial/)
in sub-packages."""
