# Masked FlashLips editor on SynthTalk 64x64, ~4.5 min on 2 CPU cores. Needs the autoencoder.
# python train.py config/editor_synth.py   (refs, lips_dim, lips_noise, editor_channels: train.py defaults)
model = "editor"
data_dir = "data/synth"
out_dir = "out/editor"
init_from = "out/ae/ckpt.pt"
max_steps = 1000                  # on the 48 px-crop autoencoder's latents val loss 0.615 at 1000 (1500 on the
                                  # whole-frame one: 0.662)
lr = 1e-3
eval_every = 500
ema = 0.995
