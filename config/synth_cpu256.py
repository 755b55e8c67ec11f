# SynthTalk at 256x256 for the CPU real-time recipe (issue 13): 80 identities x 2 clips x 4 s
# (16k frames, ~3.1 GB), ~11 min on 2 CPU cores.
# python data.py synth config/synth_cpu256.py
out_dir = "data/synth256"
resolution = 256
identities = 80
clips_per_identity = 2
seconds = 4.0
