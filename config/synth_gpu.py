# SynthTalk for GPU training: 128x128, 1000 identities x 4 clips x 8 s (~800k frames, ~40 GB).
# python data.py synth config/synth_gpu.py
out_dir = "data/synth128"
resolution = 128
identities = 1000
clips_per_identity = 4
seconds = 8.0
