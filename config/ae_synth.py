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
                                  # mouth_weight (train.py's 2) at 6 read the dark-lipped demo source's small openings
                                  # better (editor with true lips vectors 0.885 -> 0.924 on that pair) but cost the
                                  # rest of the face: id_psnr 31.09 -> 29.30 dB, and out/demo.mp4 stayed at r 0.815
lr = 2e-3
eval_every = 1500
ema = 0.995
