"""dasr: fast distributed training of BLSTM-CTC speech recognizers."""

__version__ = "0.1.0"
