# This file is part of vaultboot. Licensed under the Apache License 2.0.
"""Vaultboot: write /etc/vaultboot/config.toml from a ``vaultboot:`` mapping.

A cloud-init config module for the init stage (``cloud_init_modules``). It
takes the ``vaultboot:`` mapping of the instance's cloud-config (user-data,
typically set in the launch template), validates it against the keys that
vaultboot knows, and writes it as TOML to ``/etc/vaultboot/config.toml``
(mode 0600, root-only, written atomically: temp file in the same directory,
fsync, rename, fsync of the directory). It runs once per instance, before
network-online.target and so before vaultboot.service.

Unknown keys, wrong types, a missing required key, duplicate secret names or
output paths and unknown ``{{ template }}`` names are refused with a message
that names the place, e.g. ``vaultboot.secret[1].file[0].mode: ...``; the
module then fails, nothing is written, and vaultboot.service fails closed
(the services gated on it stay down).

Compatibility:

* cloud-init 22.4 (Debian 12) calls ``handle(name, cfg, cloud, log, args)``
  positionally and requires a module-level ``meta`` with ``frequency`` and
  ``distros`` but *no* module-level ``schema`` attribute (it raises if one
  exists): the validation lives in this module instead.
* cloud-init 23.2+ calls ``handle`` with keyword arguments ``name``, ``cfg``,
  ``cloud``, ``args`` and accepts the five-argument form with a deprecation
  warning; this module defines the four-argument form there.
* cloud-init 23.4+ validates top-level keys against its own schema, which a
  third-party module cannot extend: ``vaultboot`` is reported as an unknown
  key (``cloud-init schema`` errors, a warning in cloud-init.log) although the
  module runs normally. Use the ``write_files`` form if that is unacceptable.
* cloud-init 24.1+ no longer has ``cloudinit.config.schema.get_meta_doc``;
  this module does not use it.
"""

import logging
import os
import re
import subprocess
import tempfile

try:  # cloud-init is absent when the validator is used on its own.
    from cloudinit.distros import ALL_DISTROS
    from cloudinit.settings import PER_INSTANCE
except ImportError:  # pragma: no cover
    ALL_DISTROS = "all"
    PER_INSTANCE = "once-per-instance"

LOG = logging.getLogger(__name__)

# Tests point ROOT at a temporary directory; every path below is under it.
ROOT = "/"
CONFIG_PATH = "/etc/vaultboot/config.toml"
VAULTBOOT_BIN = "/usr/local/sbin/vaultboot"
CONFIG_KEY = "vaultboot"

MODULE_DESCRIPTION = """\
Validate the ``vaultboot`` mapping of the cloud-config and write it as
/etc/vaultboot/config.toml (0600, atomically) before vaultboot.service runs.
The mapping has the same structure as vaultboot's TOML configuration:
``vault``, ``auth``, ``imds``, ``state``, ``retry`` tables and a ``secret``
list whose items have a ``file`` list.
"""

meta = {
    "id": "cc_vaultboot",
    "name": "Vaultboot",
    "title": "Write vaultboot's configuration before it runs",
    "description": MODULE_DESCRIPTION,
    "distros": [ALL_DISTROS],
    "frequency": PER_INSTANCE,
    "activate_by_schema_keys": [CONFIG_KEY],
    "examples": [
        """\
vaultboot:
  vault:
    address: https://vault.internal:8200
  auth:
    role: web
  secret:
    - name: tls
      path: pki_int/issue/web
      data: {common_name: "{{ local-hostname }}", ttl: 72h}
      file:
        - path: /etc/nginx/tls/server.crt
          fields: [certificate, "ca_chain?"]
          mode: "0644"
        - path: /etc/nginx/tls/server.key
          fields: [private_key]
"""
    ],
}


class VaultbootConfigError(ValueError):
    """The ``vaultboot`` mapping is not a valid vaultboot configuration."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__(
            "invalid vaultboot configuration, nothing written:\n  "
            + "\n  ".join(self.errors)
        )


# ---------------------------------------------------------------------------
# Validation (keys and rules from CONTRACT.md)
# ---------------------------------------------------------------------------

TEMPLATE_NAMES = frozenset(
    [
        "instance-id",
        "region",
        "account-id",
        "availability-zone",
        "image-id",
        "private-ip",
        "local-hostname",
        "local-ipv4",
    ]
)
_TEMPLATE_RE = re.compile(r"\{\{(.*?)\}\}")
# humantime-style durations: "10s", "5m", "1h 30m", "72h", "250ms".
_DURATION_UNITS = (
    "nsec|ns|usec|us|msec|ms|seconds|second|sec|s|minutes|minute|min|m|"
    "hours|hour|hr|h|days|day|d|weeks|week|w"
)
_DURATION_RE = re.compile(
    r"^\s*(?:[0-9]+\s*(?:%s)\s*)+$" % _DURATION_UNITS
)
_MODE_RE = re.compile(r"^(?:0o)?[0-7]{1,4}$")
_VAULT_PATH_RE = re.compile(r"^[A-Za-z0-9_.+@/-]+$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$|^[0-9]+$")


class _Checker:
    def __init__(self):
        self.errors = []

    def err(self, where, msg):
        self.errors.append("%s: %s" % (where, msg))

    # -- primitive checks; each returns True when the value is usable -------
    def table(self, where, value, known, required=()):
        if not isinstance(value, dict):
            self.err(where, "must be a mapping, not %s" % _tname(value))
            return False
        for key in value:
            if not isinstance(key, str):
                self.err(where, "key %r must be a string" % (key,))
            elif key not in known:
                self.err(
                    "%s.%s" % (where, key),
                    "unknown key (known: %s)" % ", ".join(sorted(known)),
                )
        for key in required:
            if key not in value:
                self.err("%s.%s" % (where, key), "required key is missing")
        return True

    def string(self, where, value, empty_ok=False):
        if not isinstance(value, str):
            self.err(where, "must be a string, not %s" % _tname(value))
            return False
        if not empty_ok and not value.strip():
            self.err(where, "must not be empty")
            return False
        if "\x00" in value:
            self.err(where, "must not contain a NUL character")
            return False
        return True

    def boolean(self, where, value):
        if not isinstance(value, bool):
            self.err(where, "must be true or false, not %s" % _tname(value))
            return False
        return True

    def choice(self, where, value, choices):
        if self.string(where, value) and value not in choices:
            self.err(
                where,
                "must be one of %s, not %r"
                % (", ".join('"%s"' % c for c in choices), value),
            )

    def duration(self, where, value):
        if self.string(where, value):
            if not _DURATION_RE.match(value):
                self.err(
                    where,
                    'must be a duration such as "10s", "5m" or "1h 30m", not %r'
                    % (value,),
                )
            elif not re.search(r"[1-9]", value):
                self.err(where, "must be longer than zero")

    def vault_path(self, where, value):
        """A path after /v1/ (also a mount): relative, no empty, . or .. segments."""
        if not self.string(where, value):
            return
        if (
            value.startswith("/")
            or value.endswith("/")
            or "//" in value
            or not _VAULT_PATH_RE.match(value)
            or any(seg in (".", "..") for seg in value.split("/"))
        ):
            self.err(
                where,
                "must be a Vault path after /v1/ such as \"secret/data/app\" "
                "(no leading or trailing '/', no '.' or '..'), not %r" % (value,),
            )

    def output_path(self, where, value):
        if not self.string(where, value):
            return
        if not value.startswith("/"):
            self.err(where, "must be an absolute path, not %r" % (value,))
        elif value.endswith("/"):
            self.err(where, "must name a file, not a directory (%r)" % (value,))
        elif any(seg in (".", "..") for seg in value.split("/")):
            self.err(where, "must not contain . or .. (%r)" % (value,))
        elif value.rstrip("/").count("/") < 2:
            self.err(where, "files directly in / are refused (%r)" % (value,))
        self.templates(where, value)

    def abspath(self, where, value):
        if not self.string(where, value):
            return
        if not value.startswith("/"):
            self.err(where, "must be an absolute path, not %r" % (value,))
        if "{{" in value:
            self.err(where, "templates are not allowed here")

    def url(self, where, value, schemes):
        if not self.string(where, value):
            return False
        m = re.match(r"^([a-z0-9]+)://([^/?#@\s]+)/?$", value)
        if not m:
            self.err(
                where,
                "must be scheme://host[:port] with no path, query or "
                "credentials, like https://vault.internal:8200 (not %r)" % (value,),
            )
            return False
        if m.group(1) not in schemes:
            self.err(
                where,
                "scheme %s:// is not allowed here (allowed: %s)"
                % (m.group(1), ", ".join(s + "://" for s in schemes)),
            )
            return False
        return True

    def templates(self, where, text):
        for match in _TEMPLATE_RE.finditer(text):
            name = match.group(1).strip()
            if name not in TEMPLATE_NAMES:
                self.err(
                    where,
                    "unknown template {{ %s }} (known: %s)"
                    % (name, ", ".join(sorted(TEMPLATE_NAMES))),
                )

    def string_list(self, where, value, empty_ok=False):
        if not isinstance(value, list):
            self.err(where, "must be a list of strings, not %s" % _tname(value))
            return False
        if not value and not empty_ok:
            self.err(where, "must not be empty")
            return False
        ok = True
        for i, item in enumerate(value):
            ok = self.string("%s[%d]" % (where, i), item) and ok
        return ok

    def data_value(self, where, value):
        """A JSON-able value of a secret's ``data`` body."""
        if isinstance(value, bool) or isinstance(value, int):
            return
        if isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                self.err(where, "must be a finite number")
            return
        if isinstance(value, str):
            self.string(where, value, empty_ok=True)
            self.templates(where, value)
            return
        if isinstance(value, list):
            for i, item in enumerate(value):
                self.data_value("%s[%d]" % (where, i), item)
            return
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    self.err(where, "key %r must be a string" % (key,))
                    continue
                self.data_value("%s.%s" % (where, key), item)
            return
        self.err(
            where,
            "must be a string, number, boolean, list or mapping, not %s"
            % _tname(value),
        )


def _octal(mode):
    return int(mode[2:] if mode.startswith("0o") else mode, 8)


def _tname(value):
    if value is None:
        return "null (an empty value)"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


SECTIONS = {
    "vault": (
        {
            "address",
            "ca_cert",
            "tls_server_name",
            "namespace",
            "request_timeout",
            "insecure_http",
            "proxy",
        },
        ("address",),
    ),
    "auth": (
        {"method", "mount", "role", "iam_server_id", "sts_region", "revoke_token"},
        ("role",),
    ),
    "imds": ({"endpoint", "token_ttl", "signature"}, ()),
    "state": ({"dir"}, ()),
    "retry": ({"deadline", "max_delay"}, ()),
}
SECRET_KEYS = {"name", "path", "data", "file"}
FILE_KEYS = {"path", "fields", "mode", "owner", "group", "on_change", "format"}


def validate(cfg, where=CONFIG_KEY):
    """Check a vaultboot configuration mapping; raise VaultbootConfigError."""
    c = _Checker()
    known = set(SECTIONS) | {"secret"}
    if not c.table(where, cfg, known, required=("vault", "auth")):
        raise VaultbootConfigError(c.errors)

    vault = cfg.get("vault")
    if vault is not None and c.table(where + ".vault", vault, *SECTIONS["vault"]):
        w = where + ".vault"
        insecure = vault.get("insecure_http", False)
        if "insecure_http" in vault:
            c.boolean(w + ".insecure_http", insecure)
        if "address" in vault:
            address = vault["address"]
            if isinstance(address, str) and address.startswith("http://") and insecure is not True:
                c.err(
                    w + ".address",
                    "plain http:// sends the Vault token in clear text; use https:// "
                    "(or set vault.insecure_http = true for a test server)",
                )
            else:
                schemes = ("https", "http") if insecure is True else ("https",)
                c.url(w + ".address", address, schemes)
        if "ca_cert" in vault:
            c.abspath(w + ".ca_cert", vault["ca_cert"])
        for key in ("tls_server_name", "namespace"):
            if key in vault:
                c.string("%s.%s" % (w, key), vault[key])
        if "request_timeout" in vault:
            c.duration(w + ".request_timeout", vault["request_timeout"])
        if "proxy" in vault and c.string(w + ".proxy", vault["proxy"]):
            if not vault["proxy"].startswith(("http://", "socks5://")):
                c.err(w + ".proxy", "must be an http:// or socks5:// URL")

    auth = cfg.get("auth")
    if auth is not None and c.table(where + ".auth", auth, *SECTIONS["auth"]):
        w = where + ".auth"
        method = auth.get("method", "ec2")
        if "method" in auth:
            c.choice(w + ".method", method, ("ec2", "iam"))
        if "mount" in auth:
            c.vault_path(w + ".mount", auth["mount"])
        if "role" in auth and c.string(w + ".role", auth["role"]):
            if "/" in auth["role"] or "\n" in auth["role"]:
                c.err(w + ".role", "must be a role name, without '/'")
        for key in ("iam_server_id", "sts_region"):
            if key in auth:
                c.string("%s.%s" % (w, key), auth[key])
                if method != "iam":
                    c.err(
                        "%s.%s" % (w, key),
                        'only valid with auth.method = "iam"',
                    )
        if "revoke_token" in auth:
            c.boolean(w + ".revoke_token", auth["revoke_token"])

    imds = cfg.get("imds")
    if imds is not None and c.table(where + ".imds", imds, *SECTIONS["imds"]):
        w = where + ".imds"
        if "endpoint" in imds:
            c.url(w + ".endpoint", imds["endpoint"], ("http",))
        if "token_ttl" in imds:
            c.duration(w + ".token_ttl", imds["token_ttl"])
        if "signature" in imds:
            c.choice(w + ".signature", imds["signature"], ("rsa2048", "pkcs7"))

    state = cfg.get("state")
    if state is not None and c.table(where + ".state", state, *SECTIONS["state"]):
        if "dir" in state:
            c.abspath(where + ".state.dir", state["dir"])

    retry = cfg.get("retry")
    if retry is not None and c.table(where + ".retry", retry, *SECTIONS["retry"]):
        for key in ("deadline", "max_delay"):
            if key in retry:
                c.duration("%s.retry.%s" % (where, key), retry[key])

    secrets = cfg.get("secret", [])
    if not isinstance(secrets, list):
        c.err(where + ".secret", "must be a list, not %s" % _tname(secrets))
        secrets = []
    names = {}
    outputs = {}
    for i, secret in enumerate(secrets):
        w = "%s.secret[%d]" % (where, i)
        if not c.table(w, secret, SECRET_KEYS, required=("name", "path", "file")):
            continue
        name = secret.get("name")
        if "name" in secret and c.string(w + ".name", name):
            if name in names:
                c.err(w + ".name", "duplicate secret name %r (also %s)" % (name, names[name]))
            else:
                names[name] = w
        if "path" in secret:
            c.vault_path(w + ".path", secret["path"])
        if "data" in secret:
            if isinstance(secret["data"], dict):
                c.data_value(w + ".data", secret["data"])
            else:
                c.err(w + ".data", "must be a mapping, not %s" % _tname(secret["data"]))
        files = secret.get("file")
        if "file" not in secret:
            continue
        if not isinstance(files, list) or not files:
            c.err(w + ".file", "must be a non-empty list of outputs")
            continue
        for j, out in enumerate(files):
            fw = "%s.file[%d]" % (w, j)
            if not c.table(fw, out, FILE_KEYS, required=("path", "fields")):
                continue
            if "path" in out:
                c.output_path(fw + ".path", out["path"])
                p = out["path"]
                if isinstance(p, str):
                    if p in outputs:
                        c.err(fw + ".path", "duplicate output path %r (also %s)" % (p, outputs[p]))
                    else:
                        outputs[p] = fw
            if "fields" in out and c.string_list(fw + ".fields", out["fields"]):
                seen = set()
                env = out.get("format") == "env"
                for k, field in enumerate(out["fields"]):
                    fk = "%s.fields[%d]" % (fw, k)
                    bare = field[:-1] if field.endswith("?") else field
                    if not bare:
                        c.err(fk, 'must be a field name, optionally followed by "?"')
                    elif bare in seen:
                        c.err(fk, "%r is listed twice" % (bare,))
                    elif env and not _ENV_NAME_RE.match(bare):
                        c.err(
                            fk,
                            "%r cannot be an environment variable name "
                            '(format = "env")' % (bare,),
                        )
                    seen.add(bare)
            if "mode" in out:
                mode = out["mode"]
                if isinstance(mode, int) and not isinstance(mode, bool):
                    c.err(
                        fw + ".mode",
                        'must be a quoted octal string such as "0640", not the '
                        "number %d (YAML reads an unquoted 0640 as the number 416)"
                        % mode,
                    )
                elif c.string(fw + ".mode", mode) and not _MODE_RE.match(mode):
                    c.err(
                        fw + ".mode",
                        'must be an octal mode such as "0640", not %r' % (mode,),
                    )
                elif isinstance(mode, str) and _octal(mode) > 0o777:
                    c.err(
                        fw + ".mode",
                        "setuid, setgid and sticky bits are refused on secret "
                        "files (%r)" % (mode,),
                    )
            for key in ("owner", "group"):
                kw = "%s.%s" % (fw, key)
                if key in out and c.string(kw, out[key]):
                    if not _NAME_RE.match(out[key]):
                        c.err(kw, "must be a user/group name or a number, not %r" % (out[key],))
            if "on_change" in out:
                c.string_list(fw + ".on_change", out["on_change"])
            if "format" in out:
                c.choice(fw + ".format", out["format"], ("raw", "env", "json"))

    if c.errors:
        raise VaultbootConfigError(c.errors)


# ---------------------------------------------------------------------------
# TOML emitter (the subset vaultboot's config needs, per TOML 1.0)
# ---------------------------------------------------------------------------

_BARE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def toml_string(text):
    """A TOML basic string: quotes, backslash and control characters escaped."""
    out = ['"']
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("\\u%04X" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_key(key):
    return key if _BARE_KEY_RE.match(key) else toml_string(key)


def toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        return text if ("." in text or "e" in text or "n" in text) else text + ".0"
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return (
            "{ "
            + ", ".join(
                "%s = %s" % (toml_key(k), toml_value(v)) for k, v in value.items()
            )
            + " }"
        )
    raise TypeError("cannot write %s as TOML" % type(value).__name__)


def to_toml(cfg):
    """Render a validated configuration mapping as vaultboot's TOML."""
    lines = [
        "# Written once per instance by cloud-init (cc_vaultboot) from the",
        "# 'vaultboot' key of the user-data. Check with: vaultboot check",
    ]
    for section in ("vault", "auth", "imds", "state", "retry"):
        table = cfg.get(section)
        if table is None:
            continue
        lines.append("")
        lines.append("[%s]" % section)
        for key, value in table.items():
            lines.append("%s = %s" % (toml_key(key), toml_value(value)))
    for secret in cfg.get("secret", []):
        lines.append("")
        lines.append("[[secret]]")
        for key, value in secret.items():
            if key != "file":
                lines.append("%s = %s" % (toml_key(key), toml_value(value)))
        for out in secret.get("file", []):
            lines.append("")
            lines.append("  [[secret.file]]")
            for key, value in out.items():
                lines.append("  %s = %s" % (toml_key(key), toml_value(value)))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def _under_root(path):
    return os.path.join(ROOT, path.lstrip("/"))


def _stage(path, text, mode=0o600):
    """Stage text for path: a temp file in the same directory, created with
    its final mode and owner before any byte is written, then fsynced.
    Returns the temp file's path; _commit() renames it into place."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".config.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        if os.geteuid() == 0:
            os.fchown(fd, 0, 0)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            fd = -1  # closed by the with block from here on
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        if fd >= 0:
            os.close(fd)
        os.unlink(tmp)
        raise
    return tmp


def _commit(tmp, path):
    os.rename(tmp, path)
    dfd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _vaultboot_check(tmp, log):
    """Run `vaultboot check` on the staged file when the binary is there."""
    binary = _under_root(VAULTBOOT_BIN)
    if ROOT != "/" or not os.access(binary, os.X_OK):
        log.debug("vaultboot: %s not found, `vaultboot check` skipped", binary)
        return
    proc = subprocess.run(
        [binary, "check", "--config", tmp],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
    )
    if proc.returncode != 0:
        raise VaultbootConfigError(
            [
                "vaultboot check refused the configuration (exit %d): %s"
                % (proc.returncode, proc.stdout.decode("utf-8", "replace").strip())
            ]
        )


def apply(cfg, log=LOG):
    """Validate the whole cloud-config's ``vaultboot`` key and write it.
    Returns the path written, or None when there is no ``vaultboot`` key."""
    if CONFIG_KEY not in cfg:
        log.debug("vaultboot: no '%s' key in the cloud-config, skipping", CONFIG_KEY)
        return None
    vb = cfg[CONFIG_KEY]
    validate(vb)
    for entry in cfg.get("write_files") or []:
        if isinstance(entry, dict) and entry.get("path") == CONFIG_PATH:
            log.warning(
                "vaultboot: write_files also writes %s; the 'vaultboot' key "
                "wins (this module runs after write_files)",
                CONFIG_PATH,
            )
    text = to_toml(vb)
    target = _under_root(CONFIG_PATH)
    tmp = _stage(target, text)
    try:
        _vaultboot_check(tmp, log)
        _commit(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    log.info("vaultboot: wrote %s (%d secrets)", CONFIG_PATH, len(vb.get("secret", [])))
    return target


def _cloudinit_version():
    try:
        from cloudinit import version

        parts = version.version_string().split(".")
        return int(parts[0]), int(parts[1])
    except Exception:  # pragma: no cover
        return (0, 0)


if _cloudinit_version() >= (23, 2):

    def handle(name, cfg, cloud, args):  # pylint: disable=unused-argument
        """cloud-init >= 23.2: called with keyword arguments."""
        apply(cfg, LOG)

else:

    def handle(name, cfg, cloud, log, args):  # pylint: disable=unused-argument
        """cloud-init 22.4: called positionally with its own logger."""
        apply(cfg, log or LOG)
