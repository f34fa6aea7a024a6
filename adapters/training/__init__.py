"""Training runtimes (Kubernetes, this machine), their settings, the trainer contract and the reference trainer.

``base`` is the runtime protocol the training module drives; ``contract`` is what a training process may rely
on (environment variables, the job-scoped API it talks to, exit codes); ``trainer`` is the reference trainer
that honours that contract with numpy alone (and, with the ``train`` extra, Hugging Face transformers).
"""
