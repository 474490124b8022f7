"""Use a trained model: index a collection, search it by text or image, draw the retrieval figure of a paper.

    python -m retrieval.index --pretrained RUN (--images DIR | --dataset NAME) [--texts FILE] --out INDEX
    python -m retrieval.search INDEX (--text "a red star" | --image PATH | --queries FILE) -k 10 [--json]
    python -m retrieval.figure RUN [--queries 5] [-k 8] [--direction t2i|i2t] --out fig.png

Modules: `codes` (packed bits and FAISS indexes), `store` (the index folder), `collection` (what gets indexed and
its encoding), `index`, `search` and `figure` (the commands), `results` (what a search returns), `gallery`
(drawings of results), `cli` (shared command-line parts). docs/retrieval.md describes them.
Every method whose codes are ±1 under the Hamming distance works; a method with its own distance is refused.
"""
