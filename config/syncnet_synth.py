# The lip-sync expert on SynthTalk 64x64, ~3 min on 2 CPU cores. Needs nothing else.
# python train.py config/syncnet_synth.py
model = "syncnet"
data_dir = "data/synth"
out_dir = "out/syncnet"
batch_size = 16
max_steps = 600
lr = 1e-3
warmup = 50
eval_every = 200
ema = 0.99
