"""prosparse-cpu: activation-sparse LLM inference on plain CPUs."""
