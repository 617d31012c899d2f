"""Model compression toolkit: relevance data, evaluation harness, SFT/distillation and OSSCAR pruning.

Modules: `data` (ESCO-derived labelled pairs, reserved-occupation filter), `metrics` (AUC, NDCG@k, MRR),
`evaluate` (the worker's engine and prompt on a held-out split), `train` (yes/no SFT and distillation),
`prune` (OSSCAR structured MLP pruning and baselines), `pipeline` (prune → distil → eval → export),
`models` (what a command's model argument names; an adapter merged to be scored as served).

Layer: offline. Imports schemas, engine (it scores through the serving engine and prompt), jobscore and
the summarizer's public `summarize` (the summary context); never worker.
"""
