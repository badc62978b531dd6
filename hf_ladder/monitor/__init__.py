"""Read the samples while the model trains: coherence score, auto-halt, memorization and overfitting alerts."""

from hf_ladder.monitor.callback import SampleMonitor
from hf_ladder.monitor.coherence import coherence_score
from hf_ladder.monitor.memorization import NgramIndex

__all__ = ["coherence_score", "SampleMonitor", "NgramIndex"]
