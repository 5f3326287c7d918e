"""Fine-tunes T5 on Multi30k English -> German (Elliott et al. 2016; 29,000 training pairs, the 1,014-pair
validation set), text to text ("translate English to German: <en>" -> "<de>"), scored by BLEU (sacrebleu) and exact
match on greedy decodes of at most 64 tokens. Local copy: config.finetune.data_dir/translation/multi30k.

Command:   python -m lmx.train --config=configs/finetune_multi30k.py:t5_tiny --workdir=/tmp/ft_multi30k \\
               --config.checkpoint.init_from=/tmp/t5_tiny
Argument:  t5_tiny (the default and only choice: the task needs a decoder).
Hardware:  two CPU cores, float32. Recipe: lmx/finetune/configs.py (batch 32, 64 input and 64 target tokens, 500
           steps = 0.55 epochs, evaluation with greedy decoding every 250 steps).
Wall time: 5.5 minutes here from random weights (0.55 s/step; each evaluation decodes the 1,014 sentences in 15-40 s).
Expected:  a smoke test of the text-to-text path more than a translation system: t5_tiny's 2,000-piece vocabulary is
           trained on English only, so German words break into many pieces. Measured from random weights (seed 0):
           BLEU 2.8 at step 250, 3.4 at step 500, exact match 0 (1,000 steps: BLEU 5.5, 11 minutes).
"""

import pathlib

from lmx.finetune.configs import finetune_config


def get_config(arg: str | None = None):
    return finetune_config(
        "multi30k",
        arg,
        pathlib.Path(__file__).parent,
        pretrained=("t5_tiny",),
        steps=500,
        inputs_length=64,
        targets_length=64,
        eval_every=250,
        text_to_text=True,
    )
