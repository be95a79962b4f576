"""Training: one loop for every model and learning rule, one process or DDP under torchrun.

    loop.py        `train` (the loop, its epoch hooks), `train_from_args` (what `edgeml train` does), `make_learner`
    learners.py    the `Learner` protocol, `BackpropLearner`, what learners share (stages, BatchNorm re-estimation)
    optim.py       `OptimizerSet`: AdamW + cosine or schedule-free AdamW, and their state as checkpoint tensors
    checkpoint.py  the run folder: checkpoints, metrics.jsonl, resume state, `load_weights`
    data.py        splits, each rank's sample order, loaders, batches, the data's portable provenance
    evaluation.py  `evaluate`: top-1 / top-5, confusion, video top-1, spike rates
    distributed.py process group, gradient averaging, weight sync

The LLS `LocalLearner` lives with its rule in `edgeml.lls.trainer`. This package's `__init__` imports nothing, so
importing one of its modules never pulls in the loop (which imports `edgeml.lls.trainer`, which imports
`edgeml.training.learners`).
"""
