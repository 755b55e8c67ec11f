# Autoencoder for real time at 256x256 on a CPU (issue 13): f = 8 -> 32x32x8 latents. The image is
# pixel-unshuffled by 4 (64x64x48) so no convolution runs above 64x64, and the levels are narrow
# (32, 64): encode + two decodes ~17 ms on 2 cores, where config/ae_gpu.py's take ~1000. Trained on
# 128x128 crops (half of them on the mouth), ~4x cheaper a step than whole frames.
# python data.py synth config/synth_cpu256.py && python train.py config/ae_cpu256.py
model = "ae"
data_dir = "data/synth256"
out_dir = "out/ae_cpu256"
factor = 8
ae_stem = 4
ae_channels = (32, 64)
ae_latent = 8                     # 32x32x8: with 4 channels the reconstructions held 30.4 dB (eyes and teeth blurred)
ae_crop = 128
batch_size = 16
max_steps = 6000                  # ~230 ms a step of 16 crops on 2 cores: ~24 min, 32.65 dB (4000, ~15 min: 31.86)
lr = 2e-3
eval_every = 1000
ema = 0.995
dtype = "float32"                 # as fast as bf16 here (234 vs 243 ms a step), and the PSNR bar is 32 dB
