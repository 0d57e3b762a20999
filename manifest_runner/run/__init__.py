"""``run`` and ``exec --watch``: one event loop (:mod:`.runner`) over collaborators that each own one concern."""
