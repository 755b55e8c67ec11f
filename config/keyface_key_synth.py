# KeyFace keyframe model on SynthTalk 64x64, CPU: T = 8 keyframes 2 frames apart, every pixel generated
# from one identity frame, the audio, its events and the valence / arousal tracks.
# Needs the FlashLips pose model (its frozen audio encoder, the autoencoder under it) and the event encoder.
# python train.py config/keyface_key_synth.py
model = "keyface"
data_dir = "data/synth"
out_dir = "out/keyface_key"
init_from = "out/pose/ckpt.pt"
events_from = "out/events/ckpt.pt"
keyframes = 8
stride = 2                        # as KeySync's: the in-betweens start from the keyframes' blend, and a blend over
                                  # 4 frames (160 ms) cannot follow a phoneme: sync r 0.72 at 4, 0.83 / 0.82 at 2
batch_size = 8                    # windows: 8 x 8 = 64 frames a step
max_steps = 1500
lr = 1e-3
warmup = 50
eval_every = 500
ks_poses = True                   # also the lips poses the pose model samples from the audio, as KeySync's keyframes
other_clip = True                 # the identity image from the person's other clip: another expression
nsv_windows = 0.3                 # 30 % of the windows around a laugh or a sigh (40 % then hold one, 17 % without):
                                  # sighs drawn as laughs without it (sighs rendered 45 -> 70 % on 4 faces, README)
eyes_weight = 4.0                 # the eyes' and brows' latent cells weigh 5 in the loss (one model: arousal r 0.21 -> 0.77,
                                  # sighs 83 -> 86 %, drift +0.51 -> +0.15 dB; README)
ema = 0.995
