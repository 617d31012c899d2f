"""Scoring engines and everything that defines a model's answer.

The engines behind one protocol (vLLM, plain HF transformers), the prompt template and builder, the
answer tokens and P(yes), model identity (the ``jobscore_model.json`` sidecar), the one factory
`engine.factory.engine_from_settings`, the tiny test model and the packaged pretrained models.

Layer: ground. Imports schemas only; worker, summarizer, compress and bench all score through it.
"""
