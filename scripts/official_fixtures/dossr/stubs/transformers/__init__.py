"""Stand-in transformers: ldm's encoders module imports these names; DoSSR uses only the OpenCLIP embedder."""


class _Unavailable:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(f"stand-in transformers: {type(self).__name__} is not available")

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        raise NotImplementedError(f"stand-in transformers: {cls.__name__} is not available")


class T5Tokenizer(_Unavailable): ...
class T5EncoderModel(_Unavailable): ...
class CLIPTokenizer(_Unavailable): ...
class CLIPTextModel(_Unavailable): ...
