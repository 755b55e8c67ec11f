# KeySync interpolation model on SynthTalk 64x64, CPU: the 3 frames between two keyframes 4 apart.
# python train.py config/keysync_interp_synth.py
model = "keysync"
interp = True
data_dir = "data/synth"
out_dir = "out/keysync_interp"
init_from = "out/pose/ckpt.pt"
stride = 4
batch_size = 16                   # windows: 16 x 5 = 80 frames a step
max_steps = 1500
lr = 1e-3
warmup = 50
eval_every = 400
ema = 0.995
