"""Several workers on one study: who owns a trial, the one claim, dead workers and their runs, waiting.

owners.py   who runs a trial (host, process namespace, pid, process instance), and whether it still runs
claim.py    the one claim: of the live trials holding a key, the earliest wins (slots, pairs, the final)
waiting.py  what a study holds, failing trials of dead workers, waiting for the others
closer.py   the one dead-run closer, and the hand-over of a run that finished before its trial was told
once.py     what is done once per experiment (closing a stage run), claimed like a trial
faults.py   test-only fault injection at named points
local.py    the `--jobs` processes started on this machine, with their share of the BLAS threads
groups.py   child processes that lead their own process group, stopped with all they started
"""

from pipeline.workers.claim import LIVE, SurplusTrial, claim, holders, is_surplus, slot_key, yield_trial
from pipeline.workers.closer import DIED, Closer, close_dead_run, hand_over, has_result
from pipeline.workers.faults import fault
from pipeline.workers.once import run_once
from pipeline.workers.owners import instance_of, is_orphan, namespace, owner, owner_alive, pid_alive, record_owner
from pipeline.workers.waiting import FINISHED, Tally, describe_running, recover_orphans, tally, wait_until_settled

__all__ = ["DIED", "FINISHED", "LIVE", "Closer", "SurplusTrial", "Tally", "claim", "close_dead_run",
           "describe_running", "fault", "hand_over", "has_result", "holders", "instance_of", "is_orphan", "is_surplus",
           "namespace", "owner", "owner_alive", "pid_alive", "record_owner", "recover_orphans", "run_once", "slot_key",
           "tally", "wait_until_settled", "yield_trial"]
