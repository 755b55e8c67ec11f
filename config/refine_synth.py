# Mask-free self-refinement of the editor on SynthTalk 64x64, ~2 min on 2 CPU cores. Needs the masked editor.
# python train.py config/refine_synth.py
model = "refine"
data_dir = "data/synth"
out_dir = "out/refine"
init_from = "out/editor/ckpt.pt"
batch_size = 16
max_steps = 600                   # 300: lips_r 0.939, r_source 0.118; 600: 0.948, 0.099 (SynthTalk suite)
lr = 3e-4
warmup = 20
eval_every = 100
ema = 0.995
