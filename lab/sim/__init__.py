"""A discrete-event cluster simulator, calibrated on this machine, predicting the paper's GPU clusters.

model.py      closed-form communication costs (ring all-reduce, pair average, ps round trip)
engine.py     the event kernel: processes as generators, processor sharing on C cores
cluster.py    N learners of one strategy (sync, adpsgd, hybrid, ps) on the kernel -> samples/s
calibrate.py  this machine: the strategies benchmark's single run + a gloo link micro-benchmark
hardware.py   V100/P100 nodes, NVLink, InfiniBand, Ethernet from public specifications
gpu.py        compute per sample vs batch size: a public cuDNN LSTM benchmark, log-log interpolated
paper.py      the published SWB2000 times and the predictions for them
run.py        `dasr simulate`: report, figure, summary figures
"""
