"""The one exception type the CLI turns into a clear one-sentence message."""


class DasrError(Exception):
    """An error caused by the user's input or environment; its message is shown as is."""


class DataError(DasrError):
    """Input data (audio, transcripts, manifests) is missing, corrupt or unusable."""
