# Mask-free self-refinement at 256x256 on one GPU.
model = "refine"
data_dir = "data/synth256"
out_dir = "out/refine256"
init_from = "out/editor256/ckpt.pt"
batch_size = 64
max_steps = 10000
lr = 1e-4
min_lr = 1e-5
warmup = 200
eval_every = 2000
compile = True
