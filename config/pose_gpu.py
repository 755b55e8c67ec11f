# Audio -> lips-pose flow matching on one GPU, for the 256x256 editor. The pose model never sees
# pixels at 256 px (its targets come from the frozen lips encoder), so the crops' size hardly
# matters; longer windows and a wider transformer use the GPU.
model = "pose"
data_dir = "data/synth256"
out_dir = "out/pose256"
init_from = "out/editor256/ckpt.pt"
pose_dim = 256
pose_layers = 6
seq_len = 100
batch_size = 64
max_steps = 30000
lr = 5e-4
min_lr = 5e-5
warmup = 500
eval_every = 2000
