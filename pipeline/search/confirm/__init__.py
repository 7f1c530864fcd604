"""The confirm stage: candidates retrained at a budget where λ matters, in rounds on their own validation blocks,
compared pairwise per image, chosen by mean, the one-SE rule or a fit over log10 λ; train-final takes the choice.

candidates (what to train), paired (per-image correctness and paired differences), racing (rounds, scores, the
choice), fit (the quadratic over log10 λ), report (the table, figure and decision.md), stage (the Optuna loop).
"""

from pipeline.search.confirm.candidates import Candidate, candidates
from pipeline.search.confirm.racing import Score
from pipeline.search.confirm.stage import STAGE, ConfirmResult, chosen_settings, run_confirm

__all__ = ["STAGE", "Candidate", "ConfirmResult", "Score", "candidates", "chosen_settings", "run_confirm"]
