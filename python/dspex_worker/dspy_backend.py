"""Run programs through DSPy (dspy.Signature / dspy.Predict) when it is importable.

DSPy is optional: it is not installable on every machine, it costs seconds to
import, and its prompts need a real model. So it is imported only when a real
(non-mock) LM is configured; the mock LM always uses the built-in predictor,
which keeps tests deterministic whether or not DSPy is present. Setting
DSPEX_DISABLE_DSPY=1 forces the built-in predictor everywhere.
"""

import os

_dspy = None
_probed = False


def available():
    global _dspy, _probed
    if not _probed:
        _probed = True
        if os.environ.get("DSPEX_DISABLE_DSPY", "") not in ("", "0"):
            return False
        try:
            import dspy
            # dspy.LM (any litellm provider) arrived in DSPy 2.5; older
            # releases fall back to the built-in predictor.
            _dspy = dspy if hasattr(dspy, "LM") else None
        except Exception:  # ImportError, or a broken install raising anything
            _dspy = None
    return _dspy is not None


def make_lm(client):
    """A dspy.LM speaking to the same OpenAI-compatible endpoint as client."""
    kwargs = {"temperature": client.temperature, "max_tokens": client.max_tokens,
              "api_base": client.base_url}
    if client.api_key:
        kwargs["api_key"] = client.api_key
    return _dspy.LM(f"openai/{client.model}", **kwargs)


def make_predictor(signature, instructions):
    """A dspy.Predict for a dspex Signature (see programs.Signature)."""
    dspy = _dspy
    fields = {}
    for field in signature.inputs:
        info = dspy.InputField(desc=field.description) if field.description else dspy.InputField()
        fields[field.name] = (str, info)
    for field in signature.outputs:
        info = dspy.OutputField(desc=field.description) if field.description else dspy.OutputField()
        fields[field.name] = (str, info)
    # Signature(dict, instructions) works across DSPy versions (newer ones
    # route it to make_signature).
    dspy_signature = dspy.Signature(fields, instructions or None)
    return dspy.Predict(dspy_signature)


def predict(predictor, inputs, dspy_lm, output_names):
    # A per-call context rather than dspy.configure: no global side effect.
    with _dspy.settings.context(lm=dspy_lm):
        prediction = predictor(**inputs)
    return {name: prediction[name] for name in output_names}
