"""Fine-tuning and downstream evaluation: the downstream tasks (GLUE, AG News, Multi30k; lmx.finetune.downstream) in
two formats, classification features for a head and T5's text-to-text, and their metrics (lmx.finetune.metrics)."""
