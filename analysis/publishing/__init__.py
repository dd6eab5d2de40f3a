"""What a study's record gains from analysis: the winner's crown, the champion, logged and registered
models, and the reports logged as artifacts. Everything here writes to MLflow; it builds on analysis.reading.
"""
