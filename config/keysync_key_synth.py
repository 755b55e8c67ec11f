# KeySync keyframe model on SynthTalk 64x64, CPU: T = 8 keyframes 2 frames apart (a 0.6 s window).
# Needs the FlashLips pose model (its frozen audio encoder) and the autoencoder under it.
# python train.py config/keysync_key_synth.py
model = "keysync"
data_dir = "data/synth"
out_dir = "out/keysync_key"
init_from = "out/pose/ckpt.pt"
keyframes = 8
stride = 2                         # keyframes 2 frames apart: linear in-betweens of the true opening at 4 apart
                                  # correlate only 0.881 with it (0.973 at 2), and the in-betweens start from that blend
batch_size = 8                    # windows: 8 x 8 = 64 frames a step
max_steps = 1500
lr = 1e-3
warmup = 50
eval_every = 400
ks_poses = True                   # also the lips poses the pose model samples (r_driving 0.76 without)
p_true = 0.5                      # half the windows on the frames' own poses, noised: r_driving 0.825 -> 0.838
shared_noise = 0.8                # half the windows on noise their frames share, as the Dubber samples: without it
                                  # that noise left fixed colour specks on real footage (sun.mp4); r 0.856 -> 0.868
ema = 0.995
temporal_weight = 1.0             # also the error's frame-to-frame change (diffusion.loss): the keyframes' cheeks and
                                  # chin stop jumping between keyframes; 14 clips: flicker 1.61 -> 1.46, r 0.863 -> 0.867
