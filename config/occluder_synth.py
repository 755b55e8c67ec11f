# The occlusion segmenter for KeySync on SynthTalk 64x64, CPU (about a minute).
# python train.py config/occluder_synth.py
model = "occluder"
data_dir = "data/synth"
out_dir = "out/occluder"
batch_size = 32
max_steps = 600
lr = 2e-3
warmup = 30
eval_every = 300
ema = 0.99
