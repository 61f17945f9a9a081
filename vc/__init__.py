"""SpeechT5 any-to-any voice conversion: data, training, conversion, evaluation, hosting."""

__version__ = "0.1.0"
