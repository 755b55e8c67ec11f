# Masked FlashLips editor for real time at 256x256 on a CPU (issue 13), on config/ae_cpu256.py's
# 32x32x4 latents, UNet widths (64, 128): the edit ~10 ms a frame on 2 cores.
# python train.py config/editor_cpu256.py
model = "editor"
data_dir = "data/synth256"
out_dir = "out/editor_cpu256"
init_from = "out/ae_cpu256/ckpt.pt"
editor_channels = (64, 128)
max_steps = 1500
lr = 1e-3
eval_every = 500
ema = 0.995
