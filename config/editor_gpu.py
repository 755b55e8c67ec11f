# Masked FlashLips editor at 256x256 on one GPU (or torchrun for several).
model = "editor"
data_dir = "data/synth256"
out_dir = "out/editor256"
init_from = "out/ae256/ckpt.pt"
editor_channels = (128, 256)
batch_size = 64
max_steps = 50000
lr = 3e-4
min_lr = 3e-5
warmup = 1000
eval_every = 2000
compile = True
