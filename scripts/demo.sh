#!/usr/bin/env bash
# The main job: install, start the embedded PostgreSQL, ingest a corpus, fine-tune a small
# reranker on the corpus's train split, then run a few hybrid searches with reranking.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
hs=.venv/bin/hybridsearch

data=../shared/data/scifact
if [ ! -f "$data/corpus.jsonl" ]; then
    echo "SciFact not found at $data; using the sample corpus in examples/sample" >&2
    data=examples/sample
fi
collection="${DEMO_COLLECTION:-demo_$(basename "$data")}"

$hs db upgrade
$hs ingest --collection "$collection" "$data/corpus.jsonl"
$hs collections list

reranker="${HYBRIDSEARCH_DATA_DIR:-$HOME/.local/share/hybridsearch}/rerankers/$(basename "$data")-minilm"
if [ ! -f "$reranker/config.json" ]; then
    # The recipe of the test fixture: ~2 minutes on 2 cores (see tests/model_fixtures.py).
    $hs reranker train --corpus "$data/corpus.jsonl" --queries "$data/queries.jsonl" \
        --qrels "$data/qrels/train.tsv" --out "$reranker" \
        --steps 200 --max-length 64 --limit-queries 600 --negatives 1
fi

for query in \
    "0-dimensional biomaterials lack inductive properties" \
    "ALDH1 expression is associated with poorer prognosis for breast cancer" \
    "vitamin D deficiency and the risk of tuberculosis"; do
    echo
    $hs search --collection "$collection" --reranker "$reranker" --top-k 50 --top-n 3 "$query"
done
echo
$hs search --collection "$collection" --reranker "$reranker" --top-n 1 --json \
    "statins reduce the risk of cardiovascular events"
