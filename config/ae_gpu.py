# Autoencoder at 256x256 (f = 8 -> 32x32x4 latents) on one GPU.
# Data: python data.py synth config/synth_gpu.py --resolution=256 --out_dir=data/synth256
model = "ae"
data_dir = "data/synth256"
out_dir = "out/ae256"
factor = 8
ae_stem = 1
ae_channels = (64, 128, 256, 256)
batch_size = 64
max_steps = 50000
lr = 5e-4
min_lr = 5e-5
warmup = 1000
eval_every = 2000
compile = True
