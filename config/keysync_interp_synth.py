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
# model's sigmas: r 0.762, flicker 1.84; these levels: r 0.764, flicker 1.74, in half the time)
p_mean = -2.5
p_std = 1.0
batch_size = 16                   # windows: 16 x 3 = 48 frames a step
max_steps = 400                   # keyframes 2 apart leave it one frame near the blend to touch up: 14 test clips
                                  # read the same after 400 steps as after 800 (r 0.867, flicker 1.390; frames
                                  # differ by 0.02 grey levels), in 3.4 instead of 6.9 min on 2 AVX2 cores
lr = 1e-3
warmup = 50
eval_every = 200
ema = 0.995
