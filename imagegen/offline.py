"""Switch off every path by which a model library could reach the network.

Imported for its side effect before diffusers or huggingface_hub is imported
anywhere in the service, so privacy does not depend on the operator's env.
"""

import os

_OFFLINE_SWITCHES = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DIFFUSERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    "DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    # diffusers' warnings (e.g. about optional accelerate) are noise in a service log.
    "DIFFUSERS_VERBOSITY": "error",
}

for _name, _value in _OFFLINE_SWITCHES.items():
    os.environ[_name] = _value
