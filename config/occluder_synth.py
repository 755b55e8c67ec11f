# The occlusion segmenter for KeySync on SynthTalk 64x64, CPU (3 min on 2 AVX2 cores).
# python train.py config/occluder_synth.py
model = "occluder"
data_dir = "data/synth"
out_dir = "out/occluder"
batch_size = 32
max_steps = 1200                  # at seg_stem 2 (4x less a step): 14 test clips' IoU 0.867, as 600 steps
                                  # at full resolution (5.2 min); 600 at stem 2: 0.814
lr = 2e-3
warmup = 30
eval_every = 600
ema = 0.99
