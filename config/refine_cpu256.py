# Mask-free self-refinement of config/editor_cpu256.py's editor (issue 13).
# python train.py config/refine_cpu256.py
model = "refine"
data_dir = "data/synth256"
out_dir = "out/refine_cpu256"
init_from = "out/editor_cpu256/ckpt.pt"
max_steps = 300
lr = 3e-4
warmup = 20
eval_every = 100
ema = 0.995
