# KeySync interpolation model on SynthTalk 64x64, CPU: the frame between two keyframes 2 apart.
# python train.py config/keysync_interp_synth.py
model = "keysync"
interp = True
data_dir = "data/synth"
out_dir = "out/keysync_interp"
init_from = "out/pose/ckpt.pt"
stride = 2                         # as the keyframe model
# the Dubber starts these frames from the keyframes blended over time, 8 of 10 Euler levels down
# (sigma <= 0.02), so train where it is used: sigma ~ exp(N(-2.5, 1.0)) (1500 steps at the keyframe
# model's sigmas: r 0.762, flicker 1.84; these 800: r 0.764, flicker 1.74, in half the time)
p_mean = -2.5
p_std = 1.0
batch_size = 16                   # windows: 16 x 5 = 80 frames a step
max_steps = 800
lr = 1e-3
warmup = 50
eval_every = 400
ema = 0.995
