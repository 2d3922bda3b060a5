"""The course lab's inference worker, as benches/worker runs it against agent-worker: Flask
under gunicorn with one sync worker, PyTorch + transformers serving a DistilBERT sequence
classifier from a Hugging Face model folder.

    BENCH_MODEL=DIR BENCH_THREADS=N \
        gunicorn --chdir benches --worker-class sync -w 1 -b 127.0.0.1:PORT pytorch_worker:app

POST /run_model takes `{"text": "..."}` (or an empty body: 50 random characters from a-z and
space, as the lab's worker made up) and answers `{"input_text": ..., "probabilities": [...]}`,
the same shapes as agent-worker. GET /health answers `ok`. The model is loaded when gunicorn's
worker imports this module (no --preload), in eval mode; every forward pass runs under
torch.no_grad() with torch.set_num_threads(BENCH_THREADS).

The weights must hold the classification head (pre_classifier, classifier): without it
transformers draws a random one at every start and the answers would not match agent-worker's.
"""

import json
import os
import random
import string

import torch
from flask import Flask, jsonify, request
from transformers import DistilBertForSequenceClassification, PreTrainedTokenizerFast

MODEL_DIR = os.environ["BENCH_MODEL"]
THREADS = int(os.environ.get("BENCH_THREADS", "1"))
ALPHABET = string.ascii_lowercase + " "

torch.set_num_threads(THREADS)
model = DistilBertForSequenceClassification.from_pretrained(MODEL_DIR)
model.eval()
tokenizer = PreTrainedTokenizerFast(
    tokenizer_file=os.path.join(MODEL_DIR, "tokenizer.json"),
    unk_token="[UNK]",
    cls_token="[CLS]",
    sep_token="[SEP]",
    pad_token="[PAD]",
    mask_token="[MASK]",
    # As DistilBertTokenizerFast: truncation=True keeps the model's positions, and DistilBERT
    # takes no token_type_ids.
    model_max_length=model.config.max_position_embeddings,
    model_input_names=["input_ids", "attention_mask"],
)

app = Flask(__name__)


@app.get("/health")
def health():
    return "ok"


@app.post("/run_model")
def run_model():
    body = request.get_data()
    if not body.strip():
        text = "".join(random.choice(ALPHABET) for _ in range(50))
    else:
        try:
            text = json.loads(body)["text"]
            if not isinstance(text, str):
                raise TypeError("text is not a string")
        except (ValueError, KeyError, TypeError) as e:
            return jsonify(error=f'body is not {{"text": "..."}} ({e})'), 400
    with torch.no_grad():
        inputs = tokenizer(text, return_tensors="pt", truncation=True)
        logits = model(**inputs).logits[0]
        probabilities = torch.softmax(logits, dim=-1).tolist()
    return jsonify(input_text=text, probabilities=probabilities)
