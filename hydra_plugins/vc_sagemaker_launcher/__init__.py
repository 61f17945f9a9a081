"""Hydra launcher that submits each job of a sweep as a SageMaker training job (see launcher.py)."""
