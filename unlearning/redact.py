"""One scrubber for everything that leaves a process (Parquet rows, spec.yaml, reports, W&B config
and notes, log lines): secrets never reach a record or a log.

What counts as a secret:
  - the value under a key that looks like one (api_key, token, secret, password, credential, ...);
  - the value of any environment variable whose name contains KEY, TOKEN, SECRET or PASSWORD (or
    is a known credential variable), wherever it appears inside a string;
  - text in a known key format: W&B keys (40 hex digits), AWS access key ids, GitHub, Hugging Face,
    OpenAI-style and Slack tokens, private-key blocks.
A secret is replaced by "<redacted>". Lives in `unlearning` (the lowest layer) so every package can
use it.
"""
from __future__ import annotations

import functools
import os
import re
from typing import Any

REDACTED = "<redacted>"

_SECRET_KEY = re.compile(r"(api[_-]?key|apikey|token|secret|passw(or)?d|credential|private[_-]?key|"
                         r"access[_-]?key|auth)", re.IGNORECASE)
_SECRET_ENV_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
_KNOWN_ENV = ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "RAY_AUTH_TOKEN", "HF_TOKEN",
              "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN")
_MIN_LEN = 8  # shorter values ("1", "true") would redact ordinary text
# (pattern, literals one of which every match contains). A pattern none of whose literals is in a
# text cannot match there, so it is left out of the one regex that text is scanned with: the same
# matches, and a 20 MB report (trials.csv, front.html at 10,000 trials) takes 0.3 s instead of 2.4
_FORMAT_PARTS = [
    (r"\b[0-9a-f]{40}\b", ()),                                      # W&B API key (also any 40-hex digest)
    (r"\b(?:local|wandb_v\d+)[-_][0-9A-Za-z_]{30,}", ("local-", "local_", "wandb_v")),  # newer W&B key forms
    (r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", ("AKIA", "ASIA")),            # AWS access key id
    (r"\bgh[pousr]_[0-9A-Za-z]{30,}\b", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),
    (r"\bgithub_pat_[0-9A-Za-z_]{30,}\b", ("github_pat_",)),
    (r"\bhf_[0-9A-Za-z]{30,}\b", ("hf_",)),                          # Hugging Face
    (r"\bsk-[0-9A-Za-z_-]{20,}\b", ("sk-",)),                        # OpenAI-style
    (r"\bxox[abprs]-[0-9A-Za-z-]{10,}\b", ("xoxa-", "xoxb-", "xoxp-", "xoxr-", "xoxs-")),  # Slack
    (r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----", ("-----BEGIN",)),
]


@functools.lru_cache(maxsize=None)
def _formats(present: tuple[int, ...]) -> re.Pattern:
    return re.compile("|".join(_FORMAT_PARTS[i][0] for i in present))


def _formats_for(text: str) -> re.Pattern:
    """The key formats' regex, without the patterns that cannot match in `text`."""
    return _formats(tuple(i for i, (_, lits) in enumerate(_FORMAT_PARTS)
                          if not lits or any(lit in text for lit in lits)))


def secret_env_names(environ: dict[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    return [k for k in env if k in _KNOWN_ENV or _SECRET_ENV_NAME.search(k)]


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    """Values of secret-looking environment variables, longest first (so a value that contains
    another is cut out whole)."""
    env = os.environ if environ is None else environ
    vals = {env[k] for k in secret_env_names(env) if len(env.get(k, "")) >= _MIN_LEN}
    return sorted(vals, key=len, reverse=True)


def scrub_text(text: str, secrets: list[str] | None = None) -> str:
    for s in secret_values() if secrets is None else secrets:
        text = text.replace(s, REDACTED)
    return _formats_for(text).sub(REDACTED, text)


def scrub(obj: Any, _secrets: list[str] | None = None) -> Any:
    """A copy of obj (dicts, lists, tuples, scalars) fit to leave the process: values under
    secret-looking keys become "<redacted>", secrets inside strings are cut out."""
    secrets = secret_values() if _secrets is None else _secrets
    if isinstance(obj, dict):
        return {k: (REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) and v not in (None, "")
                    else scrub(v, secrets)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(scrub(v, secrets) for v in obj)
    if isinstance(obj, str):
        return scrub_text(obj, secrets)
    return obj
