"""Fine-tunes a model of configs/ on SST-2 (GLUE binary sentiment; Socher et al. 2013): 67,349 training sentences,
the 872-sentence GLUE dev set as validation, scored by accuracy. Local copy: config.finetune.data_dir/glue/sst2
(../shared/data by default; --config.finetune.source=tfds reads TFDS glue/sst2 instead).

Command:   python -m lmx.train --config=configs/finetune_sst2.py:bert_tiny --workdir=/tmp/ft_sst2 \\
               --config.checkpoint.init_from=/tmp/bert_tiny    (a pretraining workdir: its latest checkpoint)
           without init_from the model starts from random weights (the baseline).
Argument:  the pretraining config: bert_tiny (default) | electra_tiny | xlnet_tiny | t5_tiny (its encoder, mean-pooled,
           under a head) | t5_tiny,text_to_text (T5's "sst2 sentence: ..." -> "positive"/"negative") | decoder_tiny |
           gpt2_tiny (decoder-only: text to text, as a prefix LM).
Hardware:  two CPU cores, float32. Recipe: lmx/finetune/configs.py (batch 32 of 64 tokens, 600 steps = 0.29
           epochs, linear warmup 10% and decay, AdamW).
Wall time: 2.5-4.5 minutes here (0.23 s/step, 3 evaluations of the dev set, on two cores shared with other jobs).
Expected:  dev accuracy (majority class: 0.509), measured with the pretraining corpus ../shared/data/pretrain
           (--config.data.corpus=text_files --config.data.text_files='../shared/data/pretrain/*/*.txt' on both runs):
           bert_tiny from random weights 0.696; from bert_tiny pretrained 300 steps 0.709; from electra_tiny
           pretrained at the same compute (282 steps) 0.677. Seed 0; the README's fine-tuning table has the commands.
"""

import pathlib

from lmx.finetune.configs import finetune_config


def get_config(arg: str | None = None):
    return finetune_config(
        "sst2",
        arg,
        pathlib.Path(__file__).parent,
        pretrained=("bert_tiny", "electra_tiny", "xlnet_tiny", "t5_tiny", "decoder_tiny", "gpt2_tiny"),
        steps=600,
        inputs_length=64,
    )
