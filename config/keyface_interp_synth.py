# KeyFace interpolation model on SynthTalk 64x64, CPU: the frame between two keyframes 2 apart.
# The Animator starts them from the keyframes blended over time, 7 of 10 Euler levels down, so it
# trains at those noise levels (as keysync_interp_synth.py).
# python train.py config/keyface_interp_synth.py
model = "keyface"
interp = True
data_dir = "data/synth"
out_dir = "out/keyface_interp"
init_from = "out/pose/ckpt.pt"
events_from = "out/events/ckpt.pt"
stride = 2                        # as the keyframe model
p_mean = -2.5
p_std = 1.0
batch_size = 16                   # windows: 16 x 3 = 48 frames a step
max_steps = 800
lr = 1e-3
warmup = 50
eval_every = 400
ks_poses = True                   # the keyframe model's audio features (KeyFace feeds both models the same)
other_clip = True                 # the identity image from the person's other clip: another expression
ema = 0.995
