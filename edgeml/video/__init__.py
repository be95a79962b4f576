"""Compressed-domain video: decoding with motion-vector export (codec), kernels (mv), clips, synth set, datasets."""
