#!/bin/bash
# Hugging Face -> lmx -> Hugging Face, as a user runs it (README "Running"): tiny random HF GPT-2 and BERT ->
# `lmx.convert.hf import` -> 20 steps of `lmx.train` from the import -> `lmx.convert.hf export` -> from_pretrained,
# then PyTorch generates with the GPT-2 and fills a [MASK] with the BERT.   Usage: experiments/hf_round_trip/run.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
R=${1:-/tmp/rt}
rm -rf "$R"/hf_* "$R"/*_lmx "$R"/*_run "$R"/*_export
python experiments/hf_round_trip/make_hf_models.py "$R"
for fam in gpt2 bert; do
  if [ $fam = gpt2 ]; then
    CFG=configs/gpt2_tiny.py; V=$(python -c "import json; print(len(json.load(open('$R/hf_gpt2/vocab.json'))))")
  else
    CFG=configs/bert_tiny.py; V=$(wc -l < "$R/hf_bert/vocab.txt")
  fi
  MODEL="--config=$CFG --config.model.vocab_size=$V"
  python -m lmx.convert.hf import --hf_dir="$R/hf_$fam" $MODEL --out="$R/${fam}_lmx" | tee "$R/${fam}_import.txt"
  TOK=$(grep "^Its tokenizer: " "$R/${fam}_import.txt" | sed 's/^Its tokenizer: //')
  python -m lmx.train $MODEL $TOK --workdir="$R/${fam}_run" --config.checkpoint.init_from="$R/${fam}_lmx/checkpoints/0" \
      --config.train.steps=20 --config.train.eval_every=20 --config.train.log_every=5 --config.train.progress_bar=false
  python -m lmx.convert.hf export --checkpoint="$R/${fam}_run/checkpoints/20" $MODEL $TOK --out="$R/${fam}_export"
done
R="$R" python - <<'PY'
import os
import torch
import transformers

r = os.environ["R"]
gpt2 = transformers.AutoModelForCausalLM.from_pretrained(f"{r}/gpt2_export").eval()
tokenizer = transformers.AutoTokenizer.from_pretrained(f"{r}/gpt2_export")
ids = tokenizer(["ROMEO: what light"], return_tensors="pt")
with torch.no_grad():
    out = gpt2.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=0)
    loss = gpt2(**ids, labels=ids.input_ids).loss
print("GPT-2 export generates:", repr(tokenizer.decode(out[0])), "| loss on the prompt:", float(loss))
bert = transformers.BertForPreTraining.from_pretrained(f"{r}/bert_export").eval()
tokenizer = transformers.AutoTokenizer.from_pretrained(f"{r}/bert_export")
x = tokenizer(["the king is [MASK] ."], return_tensors="pt")
with torch.no_grad():
    logits = bert(**x).prediction_logits
position = (x.input_ids[0] == tokenizer.mask_token_id).nonzero()[0, 0]
print("BERT export fills [MASK] with:", tokenizer.convert_ids_to_tokens(logits[0, position].topk(5).indices.tolist()))
PY
