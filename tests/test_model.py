import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from dasr.model.blstm import BlstmCtc, ModelConfig, reverse_padded


def test_reverse_padded_reverses_within_each_length():
    x = torch.arange(10.0).reshape(2, 5, 1)
    out = reverse_padded(x, torch.tensor([5, 3]))[..., 0]
    assert out.tolist() == [[4, 3, 2, 1, 0], [7, 6, 5, 8, 9]]


def test_layers_equal_a_packed_bidirectional_lstm_on_real_frames():
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=7, input_dim=4, hidden=5, layers=2, bottleneck=6, dropout=0.0, subsampling=1)
    model = BlstmCtc(config).eval()
    reference = nn.LSTM(4, 5, num_layers=2, bidirectional=True, batch_first=True)
    with torch.no_grad():
        for layer in range(2):
            for direction, lstm in (("", model.forward_lstms[layer]), ("_reverse", model.backward_lstms[layer])):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(reference, f"{name}_l{layer}{direction}").copy_(getattr(lstm, f"{name}_l0"))
    x, lengths = torch.randn(3, 9, 4), torch.tensor([9, 4, 6])
    out, out_lens = model(x, lengths)
    packed, _ = reference(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    hidden, _ = pad_packed_sequence(packed, batch_first=True, total_length=9)
    expected = model.output(model.bottleneck(hidden)).log_softmax(-1)
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(out[b, :n], expected[b, :n], rtol=1e-5, atol=1e-6)
    assert out_lens.tolist() == [9, 4, 6]
