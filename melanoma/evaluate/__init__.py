"""Stage 3, evaluation: metrics with bootstrap CIs (:mod:`.metrics`), entropy rejection,
temperature scaling and selective curves (:mod:`.uncertainty`), conformal sets and
selective guaranteed risk (:mod:`.conformal`), and the run-level steps: reading a run directory
(:mod:`.rundir`), calibrate (:mod:`.calibrate`, metrics.json), reject (:mod:`.reject`,
rejection.json) and their display tables (:mod:`.tables`)."""
