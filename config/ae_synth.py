# Autoencoder on SynthTalk 64x64 (f = 4 -> 16x16x4 latents), ~4 min on 2 AVX512-BF16 CPU cores.
# python data.py synth && python train.py config/ae_synth.py
model = "ae"
data_dir = "data/synth"
out_dir = "out/ae"
ae_stem = 2                       # 64 px pixel-unshuffled to 32x32x12: no conv at 64x64
ae_channels = (32, 64)
batch_size = 16
max_steps = 3000                  # 1500: the reader on its reconstructions r 0.85 with the truth; 3000: 0.90
ae_crop = 48                      # 48 px windows, half on the mouth: 77 vs 122 ms a step, and better: test PSNR
                                  # 30.97 vs 30.00 dB, reader on reconstructions r 0.92 vs 0.86 (32 px: 48 ms, 29.92, 0.89)
lr = 2e-3
eval_every = 1500
ema = 0.995
