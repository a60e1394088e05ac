"""``deepspeed.launcher``: the ``deepspeed``/``ds`` command (:mod:`.runner`), the per-node
launcher (:mod:`.launch`) and the multi-node backends (:mod:`.multinode_runner`)."""
