# KeyFace interpolation model at 256x256 on one GPU (see keyface_key_gpu.py).
model = "keyface"
interp = True
data_dir = "data/synth256"
out_dir = "out/keyface_interp256"
init_from = "out/pose256/ckpt.pt"
events_from = "out/events256/ckpt.pt"
stride = 4
ks_channels = (128, 256)
p_mean = -2.0                     # started 7 of 10 levels down (see keyface_interp_synth.py)
p_std = 1.0
batch_size = 32
max_steps = 50000
lr = 3e-4
min_lr = 3e-5
warmup = 1000
eval_every = 2000
compile = True
