"""Fine-tunes a model of configs/ on AG News (4-class news topics; Zhang et al. 2015), scored by accuracy. The local
copy (config.finetune.data_dir/agnews/test.csv) is AG News's 7,600-row test set, split without randomness into
6,600 training and 1,000 validation rows (lmx/finetune/local_files.py); --config.finetune.source=tfds trains on
TFDS ag_news_subset's 120,000 and validates on its test split. Inputs: [CLS] title [SEP] description [SEP].

Command:   python -m lmx.train --config=configs/finetune_agnews.py:bert_tiny --workdir=/tmp/ft_agnews \\
               --config.checkpoint.init_from=/tmp/bert_tiny
Argument:  bert_tiny (default) | electra_tiny | xlnet_tiny | t5_tiny | t5_tiny,text_to_text | decoder_tiny | gpt2_tiny
           (decoder-only models classify text to text, as a prefix LM)
Hardware:  two CPU cores, float32. Recipe: lmx/finetune/configs.py (batch 32 of 128 tokens, 400 steps = 1.9 epochs).
Wall time: 4.6 minutes here for bert_tiny from random weights (two cores shared with other jobs).
Expected:  dev accuracy 0.423 for bert_tiny from random weights (measured, seed 0; chance 0.25): still climbing at
           the end, as the learning rate of a pretrained model (1e-4) is slow for random weights.
"""

import pathlib

from lmx.finetune.configs import finetune_config


def get_config(arg: str | None = None):
    return finetune_config(
        "agnews",
        arg,
        pathlib.Path(__file__).parent,
        pretrained=("bert_tiny", "electra_tiny", "xlnet_tiny", "t5_tiny", "decoder_tiny", "gpt2_tiny"),
        steps=400,
        inputs_length=128,
    )
