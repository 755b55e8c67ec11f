# Audio -> lips poses for config/editor_cpu256.py's editor (its lips encoder; issue 13), as
# config/pose_synth.py.
# python train.py config/pose_cpu256.py
model = "pose"
data_dir = "data/synth256"
out_dir = "out/pose_cpu256"
init_from = "out/editor_cpu256/ckpt.pt"
max_steps = 800
lr = 1e-3
eval_every = 400
ema = 0.995
dtype = "float32"                 # its small matmuls are no faster in bf16 on a CPU
