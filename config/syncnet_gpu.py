# The lip-sync expert on real video (python data.py video ... --out_dir data/video) on one GPU.
# Check the data's sync with it afterwards: python data.py sync data/video --syncnet=out/syncnet_real/ckpt.pt
model = "syncnet"
data_dir = "data/video"
out_dir = "out/syncnet_real"
batch_size = 128
max_steps = 30000
lr = 5e-4
min_lr = 5e-5
warmup = 500
eval_every = 2000
