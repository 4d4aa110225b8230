"""One scrubber for everything that leaves a process (Parquet rows, spec.yaml, reports, W&B config
and notes, log lines): secrets never reach a record or a log.

What counts as a secret:
  - the value under a key that looks like one (api_key, token, secret, password, credential, ...);
  - the value of any environment variable whose name contains KEY, TOKEN, SECRET or PASSWORD (or
    is a known credential variable), wherever it appears inside a string;
  - text in a known key format: W&B keys (40 hex digits), AWS access key ids, GitHub, Hugging Face,
    OpenAI-style and Slack tokens, private-key blocks;
  - a secret written out in free text (a spec's description, W&B notes): the word after "password",
    "passwd", "passphrase" or "pwd" ("password hunter2", "password: hunter2", "password is
    hunter2"), and the value after "secret", "token", "api key", "access key", "private key" or
    "credential" when a ":", "=" or "is" names it ("token: abc123", "api_key=...", "secret is ...").
    Values of 4 characters or more; a bare "token budget" or "secret sauce" is left alone, but
    "password is required" loses "required" (the cost of catching "password hunter2").
A secret is replaced by "<redacted>" (the word that named it stays). Lives in `unlearning` (the
lowest layer) so every package can use it.
"""
from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
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


# a secret named in prose or in a config line (module docstring): the naming word and what joins it
# to the value stay, the value goes
_VALUE = r"""(["']?)([^\s"',;]{4,})"""
_PHRASES = re.compile(
    r"""(?i)(\b(?:passw(?:or)?d|passphrase|pwd)\b["']?(?:\s*[:=]\s*|\s+is\s+|\s+))""" + _VALUE + "|"
    r"""(\b(?:secret|token|api[ _-]?key|apikey|access[ _-]?key|private[ _-]?key|credential)s?\b["']?"""
    r"""(?:\s*[:=]\s*|\s+is\s+))""" + _VALUE)
# where a phrase can start (lower case): the regex is tried there only, not at every character of
# a 20 MB report
_PHRASE_ANCHORS = ("passw", "passphrase", "pwd", "secret", "token", "api", "access", "private", "credential")


def _phrase(m: re.Match) -> str:
    lead, quote = (m.group(1), m.group(2)) if m.group(1) is not None else (m.group(4), m.group(5))
    return f"{lead}{quote}{REDACTED}"


def _scrub_phrases(text: str) -> str:
    low = text.lower()
    if len(low) != len(text):  # a case mapping that changes lengths: positions differ, scan it all
        return _PHRASES.sub(_phrase, text)
    starts = set()
    for a in _PHRASE_ANCHORS:
        i = low.find(a)
        while i >= 0:
            starts.add(i)
            i = low.find(a, i + 1)
    out, last = [], 0
    for i in sorted(starts):
        m = _PHRASES.match(text, i) if i >= last else None
        if m:
            out += [text[last:i], _phrase(m)]
            last = m.end()
    return "".join(out) + text[last:] if out else text


@functools.lru_cache(maxsize=None)
def _formats(present: tuple[int, ...]) -> re.Pattern:
    return re.compile("|".join(_FORMAT_PARTS[i][0] for i in present))


def _formats_for(text: str) -> re.Pattern:
    """The key formats' regex, without the patterns that cannot match in `text`."""
    return _formats(tuple(i for i, (_, lits) in enumerate(_FORMAT_PARTS)
                          if not lits or any(lit in text for lit in lits)))


def secret_env_names(environ: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    return [k for k in env if k in _KNOWN_ENV or _SECRET_ENV_NAME.search(k)]


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of secret-looking environment variables, longest first (so a value that contains
    another is cut out whole)."""
    env = os.environ if environ is None else environ
    vals = {env[k] for k in secret_env_names(env) if len(env.get(k, "")) >= _MIN_LEN}
    return sorted(vals, key=len, reverse=True)


def scrub_text(text: str, secrets: list[str] | None = None) -> str:
    for s in secret_values() if secrets is None else secrets:
        text = text.replace(s, REDACTED)
    return _scrub_phrases(_formats_for(text).sub(REDACTED, text))


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
