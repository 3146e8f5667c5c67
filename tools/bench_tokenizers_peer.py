#!/usr/bin/env python3
"""The peer of benchmarks/bench_text.cpp: Hugging Face tokenizers encoding the same corpus on one thread.

usage: bench_tokenizers_peer.py TOKENIZER_JSON CORPUS_JSON PASSES
Prints the median seconds of one pass (encode_batch of every entry, special tokens added, the file's own
padding off as bench_text does), after one warm-up pass. RAYON_NUM_THREADS=1 keeps it on one thread.
Pinned: tokenizers 0.23.3 (the venv at /work/modelenv).
"""
import json
import os
import statistics
import sys
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
from tokenizers import Tokenizer  # noqa: E402


def main():
    tokenizer_json, corpus_json, passes = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tok = Tokenizer.from_file(tokenizer_json)
    tok.no_padding()
    tok.no_truncation()
    with open(corpus_json) as f:
        corpus = json.load(f)
    tok.encode_batch(corpus)
    times = []
    for _ in range(passes):
        start = time.perf_counter()
        tok.encode_batch(corpus)
        times.append(time.perf_counter() - start)
    print(statistics.median(times))


if __name__ == "__main__":
    main()
