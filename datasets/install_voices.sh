#!/bin/sh
# Install the Debian packages that datasets/build_corpus.py needs (Debian 12 "bookworm"; run as root).
# Only needed to REBUILD the corpus: the FLAC files, corpus.list, splits.json and speakers.json are committed.
set -e
apt-get update
apt-get install -y --no-install-recommends \
    flite libflite1 \
    festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts \
    espeak-ng \
    pocketsphinx-testdata
