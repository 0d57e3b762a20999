"""Stage 2, converging: desired and observed state, ownership records, the pure planner, plan rendering, the one
writer (:mod:`.apply`) and the lock-and-replan loop (:mod:`.reconcile`)."""
