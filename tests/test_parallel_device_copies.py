"""L1: the CUDA stream calls of ADPSGD's side-stream copies name the parameters' device.

Runs without a GPU: torch.cuda's Stream, Event and current_stream are replaced by fakes that
record which device each call names, and :class:`DeviceCopies` is built for parameters on
``cuda:1`` in a process whose current device was never set (so it would be ``cuda:0``).

What it proves: every stream that the step hooks and ``average()`` wait on or record into is
looked up on ``cuda:1``, so on a GPU the waits order the step and the merge on the stream that
runs them. What it does not prove: that CUDA itself orders them (only a GPU run can show that;
tests/test_parallel_cuda.py runs the strategies on CUDA where one is present).
"""

import torch

from dasr.parallel.adpsgd import DeviceCopies


class FakeStream:
    def __init__(self, device=None):
        self.device = device
        self.waited, self.recorded = [], []

    def wait_event(self, event):
        self.waited.append(event)

    def wait_stream(self, stream):
        self.waited.append(stream)


class FakeEvent:
    def record(self, stream):
        stream.recorded.append(self)


def test_device_copies_use_the_parameters_device_not_the_current_one(monkeypatch):
    asked = []
    streams: dict = {}

    def current_stream(device=None):
        asked.append(device)
        return streams.setdefault(device, FakeStream(device))

    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", current_stream)
    cuda1 = torch.device("cuda", 1)
    copies = DeviceCopies(cuda1)
    assert copies.side.device == cuda1
    copies.before_step()
    copies.after_step()
    copies.wait_copies()  # average(): what follows waits for the gossip's copies
    assert asked == [cuda1, cuda1, cuda1], asked
    stream = streams[cuda1]
    assert stream.waited == [copies.copies_done, copies.side]  # the step waits for the copies queued before it
    assert stream.recorded == [copies.step_done]  # the copies wait for this step
