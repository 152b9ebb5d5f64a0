r"""String formats shared by the API models, written once so pydantic and the CRD agree.

Each pattern runs in three engines: RE2 in the API server (the CRD's `pattern` and CEL's
`matches`, both searches), the Rust `regex` crate behind pydantic's `pattern` (a search)
and Python's `re` behind the `matches` rules' twins (a fullmatch). They agree only on a
common subset, so every pattern here keeps to it (tests/unit/test_regex_parity.py checks,
tests/integration/test_regex_parity.py compares with the API server):

- anchored as `^...$`: without multi-line mode `$` is the end of the text in RE2 and Rust;
  Python's `$` also matches before a final newline, which fullmatch must still consume;
- ASCII classes spelled out (`[0-9]`, `[A-Za-z0-9_]`, `[\x00-\x20\x7f]`), never `\d`, `\w`,
  `\s` or `\b`: RE2's are ASCII (its `\s` even leaves out `\v`), Rust's are Unicode and
  Python's `\s` also holds `\x1c`-`\x1f`, so NBSP or U+3000 was a space to one engine and
  not to another;
- escapes only for ASCII punctuation, `\t \n \v \f \r` and `\xHH`; no flags, look-around,
  back-references, lazy or possessive repeats, POSIX or Unicode classes.

`.` and negated classes mean the same in all three: `.` is anything but `\n`, and `[^...]`
also matches `\n`.
"""

from __future__ import annotations

DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
ENV_VAR_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
CONFIG_KEY = r"^[-._a-zA-Z0-9]+$"
ABSOLUTE_PATH = r"^/[^\x00]*$"
# Kubernetes resource.Quantity (apimachinery's serialization format).
QUANTITY = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
PERCENT = r"^(100|[1-9]?[0-9])%$"
# An image reference is printable ASCII without spaces (the reference grammar's alphabet):
# a control character or a Unicode space (the Pod's own validation trims those) is refused.
IMAGE = r"^[!-~]+$"

_HF_NAME = r"[A-Za-z0-9][-A-Za-z0-9_.]*"
# A URL host or path element: no ASCII space or control character (UTF-8 keys and names
# are fine), the same set in every engine.
_SEGMENT = r"[^\x00-\x20\x7f/]+"
_PATH = rf"(/{_SEGMENT})*"
MODEL_SOURCE = (
    rf"^(hf://{_HF_NAME}/{_HF_NAME}"
    rf"|s3://[a-z0-9][-a-z0-9.]{{1,61}}[a-z0-9]{_PATH}"
    rf"|pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?{_PATH}"
    rf"|https?://{_SEGMENT}{_PATH}/{_HF_NAME}/{_HF_NAME})$"
)
# A Hugging Face revision: a branch, a tag or a commit SHA.
REVISION = r"^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$"
SERVED_NAME = r"^[A-Za-z0-9]([-A-Za-z0-9_./:]*[A-Za-z0-9])?$"
# NCCL interface and HCA lists: `eth0`, `^lo,docker`, `=mlx5_0:1,mlx5_1:1`.
NCCL_LIST = r"^[\^=]?[-A-Za-z0-9_.:]+(,[-A-Za-z0-9_.:]+)*$"
CONDITION_TYPE = QUALIFIED_NAME
CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
