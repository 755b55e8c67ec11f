# SynthTalk for the CPU demo: 64x64, 100 identities x 2 clips x 6 s (about 30k frames, ~400 MB).
# python data.py synth config/synth_cpu.py
out_dir = "data/synth"
resolution = 64
identities = 200
clips_per_identity = 2
seconds = 6.0
