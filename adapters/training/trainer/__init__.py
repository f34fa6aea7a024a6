"""The trainers that honour ``adapters/training/contract.py``.

``python -m adapters.training.trainer`` is the reference trainer (``reference.py``): numpy and safetensors
only, a byte-level language model that trains on a CPU in seconds; the embedded default and the test suite run
it. ``python -m adapters.training.trainer.hf`` is the Hugging Face trainer (the ``train`` extra: transformers,
TRL): the Kubernetes image's command, for real models. Both share the job's environment (``jobenv``), its API
client (``client``), the non-blocking metrics reporter (``reporter``) and the rows-to-text rules (``texts``).
Nothing is imported here, so ``-m ...hf`` does not pay for numpy's model code and the reverse.
"""

__all__: list[str] = []
