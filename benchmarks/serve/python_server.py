"""The server a Python user writes around `transformers`: FastAPI + uvicorn,
one forward pass per request, 2 torch threads. The baseline of
`cargo xtask bench --only serve` (benchmarks/serve/README.md); it answers
TEI's /predict shape so the same load generator drives both servers.

    python3 benchmarks/serve/python_server.py MODEL_DIR PORT
"""

import sys

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

torch.set_num_threads(2)
model_dir, port = sys.argv[1], int(sys.argv[2])
tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
app = FastAPI()


class Request(BaseModel):
    inputs: str
    raw_scores: bool = False


@app.get("/health")
def health():
    return {}


@app.post("/predict")
def predict(request: Request):
    batch = tokenizer(request.inputs, truncation=True, max_length=512, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**batch).logits[0]
    scores = logits if request.raw_scores else logits.softmax(-1)
    ranked = sorted(zip(scores.tolist(), labels), reverse=True)
    return [{"score": s, "label": l} for s, l in ranked]


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
