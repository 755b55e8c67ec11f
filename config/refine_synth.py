# Mask-free self-refinement of the editor on SynthTalk 64x64, ~4 min on 2 CPU cores. Needs the masked editor.
# python train.py config/refine_synth.py
model = "refine"
data_dir = "data/synth"
out_dir = "out/refine"
init_from = "out/editor/ckpt.pt"
batch_size = 16
max_steps = 600
lr = 3e-4
warmup = 20
eval_every = 200
ema = 0.995
