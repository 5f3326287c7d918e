"""Fine-tunes a model of configs/ on RTE (GLUE textual entailment): 2,490 training pairs, the 277-pair GLUE dev set
as validation, scored by accuracy. Pairs are [CLS] premise [SEP] hypothesis [SEP] with token types 0 / 1. Local
copy: config.finetune.data_dir/glue/rte (../shared/data by default; or --config.finetune.source=tfds).

Command:   python -m lmx.train --config=configs/finetune_rte.py:bert_tiny --workdir=/tmp/ft_rte \\
               --config.checkpoint.init_from=/tmp/bert_tiny
Argument:  bert_tiny (default) | electra_tiny | xlnet_tiny | t5_tiny | t5_tiny,text_to_text | decoder_tiny | gpt2_tiny
           (decoder-only models classify text to text, as a prefix LM)
Hardware:  two CPU cores, float32. Recipe: lmx/finetune/configs.py (batch 32 of 128 tokens, 240 steps = 3 epochs).
Wall time: 2.8 minutes here for bert_tiny from random weights (two cores shared with other jobs).
Expected:  near chance for tiny models: bert_tiny from random weights 0.527 dev accuracy (measured, seed 0; the
           majority class is 0.527 too). RTE is small and hard; this checks that sentence pairs train end to end.
"""

import pathlib

from lmx.finetune.configs import finetune_config


def get_config(arg: str | None = None):
    return finetune_config(
        "rte",
        arg,
        pathlib.Path(__file__).parent,
        pretrained=("bert_tiny", "electra_tiny", "xlnet_tiny", "t5_tiny", "decoder_tiny", "gpt2_tiny"),
        steps=240,
        inputs_length=128,
        eval_every=80,
    )
