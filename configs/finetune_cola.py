"""Fine-tunes a model of configs/ on CoLA (GLUE linguistic acceptability; Warstadt et al. 2019): 8,551 training
sentences, the 1,043-sentence GLUE dev set as validation, scored by Matthews correlation. Local copy:
config.finetune.data_dir/glue/cola (../shared/data by default; --config.finetune.source=tfds reads TFDS glue/cola).

Command:   python -m lmx.train --config=configs/finetune_cola.py:bert_tiny --workdir=/tmp/ft_cola \\
               --config.checkpoint.init_from=/tmp/bert_tiny    (a pretraining workdir: its latest checkpoint)
Argument:  bert_tiny (default) | electra_tiny | xlnet_tiny | t5_tiny | t5_tiny,text_to_text | decoder_tiny | gpt2_tiny
           (decoder-only models classify text to text, as a prefix LM)
Hardware:  two CPU cores, float32. Recipe: lmx/finetune/configs.py (batch 32 of 64 tokens, 500 steps = 1.9 epochs).
Wall time: 2-2.5 minutes here (two cores shared with other jobs).
Expected:  dev MCC 0.0 for bert_tiny from random weights, from bert_tiny pretrained 300 steps on
           ../shared/data/pretrain, and from electra_tiny at the same compute (seed 0, measured): each ends up
           answering "acceptable" (69% of the dev set) for every sentence, which scores MCC 0. CoLA needs grammar
           that tiny, briefly pretrained models do not have; it checks the MCC path end to end.
"""

import pathlib

from lmx.finetune.configs import finetune_config


def get_config(arg: str | None = None):
    return finetune_config(
        "cola",
        arg,
        pathlib.Path(__file__).parent,
        pretrained=("bert_tiny", "electra_tiny", "xlnet_tiny", "t5_tiny", "decoder_tiny", "gpt2_tiny"),
        steps=500,
        inputs_length=64,
    )
