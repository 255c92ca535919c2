"""packer/install.sh and packer/cleanup.sh on a temporary root (DESTDIR)."""

import filecmp
import os
import shutil
import stat
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
INSTALL = os.path.join(REPO, "packer", "install.sh")
CLEANUP = os.path.join(REPO, "packer", "cleanup.sh")
DIST = os.path.join(REPO, "dist")
HOST_CLOUD_CFG = "/etc/cloud/cloud.cfg"  # Debian's cloud-init package

CONFIG = """\
[vault]
address = "https://vault.internal:8200"

[auth]
role = "web"

[[secret]]
name = "tls"
path = "pki_int/issue/web"

  [[secret.file]]
  path = "/etc/nginx/tls/server.crt"
  fields = ["certificate"]

  [[secret.file]]
  path = "/etc/nginx/tls/{{ instance-id }}.key"
  fields = ["private_key"]
"""
IS_ROOT = os.geteuid() == 0
# The real static binary: cleanup.sh asks it for the outputs, in a chroot of the test's root.
# tests/packaging/run.sh sets VAULTBOOT_STATIC_BIN (the release stage's build, or its own).
STATIC_BIN = os.environ.get("VAULTBOOT_STATIC_BIN") or os.path.join(
    REPO, "target", "x86_64-unknown-linux-musl", "release", "vaultboot"
)

# Outputs spelled every way TOML allows (basic and literal strings, an inline table, a
# template); what a grep for `path = "/..."` lines missed.
CLEANUP_CONFIG = """\
[vault]
address = "https://vault.internal:8200"

[auth]
role = "web"

[[secret]]
name = "tls"
path = "pki_int/issue/web"

  [[secret.file]]
  path = "/etc/nginx/tls/server.crt"
  fields = ["certificate"]

  [[secret.file]]
  path = '/etc/nginx/tls/server.key'
  fields = ["private_key"]

[[secret]]
name = "api"
path = "secret/data/app/api"
file = [
  { path = "/etc/app/api.env", format = "env", fields = ["api_key"] },
  { path = '/etc/app/{{ instance-id }}.json', fields = ["api_key"] },
]

[[secret]]
name = "ad-join"
path = "secret/data/ad/join"
file = [{ path = "/run/vaultboot/ad-join.env", format = "env", fields = ["password"] }]
"""


class Root(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = os.path.join(self.tmp.name, "root")
        os.makedirs(os.path.join(self.root, "etc/cloud/cloud.cfg.d"))
        shutil.copy(HOST_CLOUD_CFG, os.path.join(self.root, "etc/cloud/cloud.cfg"))
        for f in os.listdir("/etc/cloud/cloud.cfg.d"):
            if f.endswith(".cfg"):
                shutil.copy(os.path.join("/etc/cloud/cloud.cfg.d", f), os.path.join(self.root, "etc/cloud/cloud.cfg.d", f))
        self.ccdir = os.path.join(self.root, "usr/lib/python3/dist-packages/cloudinit/config")
        os.makedirs(self.ccdir)
        open(os.path.join(self.ccdir, "modules.py"), "w").close()
        self.binary = os.path.join(self.tmp.name, "vaultboot")
        with open(self.binary, "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        os.chmod(self.binary, 0o700)
        self.config = os.path.join(self.tmp.name, "config.toml")
        with open(self.config, "w") as f:
            f.write(CONFIG)
        os.chmod(self.config, 0o644)

    def tearDown(self):
        self.tmp.cleanup()

    def p(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def run_sh(self, script, *args, env=None, check=True):
        e = dict(os.environ, DESTDIR=self.root)
        e.update(env or {})
        proc = subprocess.run(["sh", script, *args], env=e, capture_output=True, text=True)
        if check and proc.returncode != 0:
            self.fail("%s failed (%d):\n%s%s" % (script, proc.returncode, proc.stdout, proc.stderr))
        return proc

    def install(self, *extra, env=None, check=True):
        args = [self.binary, DIST, *extra]
        return self.run_sh(INSTALL, *args, env=env, check=check)

    def mode(self, path):
        st = os.lstat(self.p(path))
        return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid

    def tree(self, top):
        """Every file under top with its bytes and mode, to compare before and after."""
        out = {}
        for dirpath, _, files in os.walk(self.p(top)):
            for f in files:
                full = os.path.join(dirpath, f)
                with open(full, "rb") as fh:
                    out[os.path.relpath(full, self.root)] = (fh.read(), os.lstat(full).st_mode)
        return out


class TestInstall(Root):
    def test_files_owners_and_modes(self):
        self.install(self.config, env={"GATE_UNITS": "nginx.service"})
        uid = 0 if IS_ROOT else os.geteuid()
        expect = {
            "/usr/local/sbin/vaultboot": 0o755,
            "/etc/systemd/system/vaultboot.service": 0o644,
            "/etc/systemd/system/vaultboot-refresh.service": 0o644,
            "/etc/systemd/system/vaultboot-refresh.timer": 0o644,
            "/etc/systemd/system/nginx.service.d/10-vaultboot.conf": 0o644,
            "/etc/systemd/system/vaultboot.service.d/10-nginx.conf": 0o644,
            "/etc/vaultboot": 0o700,
            "/etc/vaultboot/config.toml": 0o600,
            "/var/lib/vaultboot": 0o700,
            "/usr/local/share/doc/vaultboot/examples/vaultboot-ad-join.service": 0o644,
            "/usr/local/share/doc/vaultboot/examples/vaultboot.service.d/10-nginx.conf": 0o644,
        }
        for path, mode in expect.items():
            with self.subTest(path=path):
                m, u, g = self.mode(path)
                self.assertEqual(oct(m), oct(mode))
                self.assertEqual(u, uid)
                if IS_ROOT:
                    self.assertEqual(g, 0)
        self.assertTrue(filecmp.cmp(self.binary, self.p("/usr/local/sbin/vaultboot"), shallow=False))
        # dist/'s units start the packages' /usr/sbin/vaultboot; this install's is in /usr/local.
        for unit in ("vaultboot.service", "vaultboot-refresh.service"):
            with open(os.path.join(DIST, "systemd", unit)) as f:
                shipped = f.read()
            with open(self.p("/etc/systemd/system/" + unit)) as f:
                installed = f.read()
            self.assertIn("\nExecStart=/usr/sbin/vaultboot run", shipped)
            self.assertEqual(installed, shipped.replace("\nExecStart=/usr/sbin/vaultboot ", "\nExecStart=/usr/local/sbin/vaultboot "))
        self.assertTrue(filecmp.cmp(self.config, self.p("/etc/vaultboot/config.toml"), shallow=False))
        # Both halves of the gate: nginx requires vaultboot; a successful vaultboot starts nginx.
        with open(self.p("/etc/systemd/system/vaultboot.service.d/10-nginx.conf")) as f:
            self.assertIn("\n[Service]\nExecStartPost=-systemctl start --no-block nginx.service\n", f.read())
        # No temp files left anywhere.
        for dirpath, _, files in os.walk(self.root):
            for f in files:
                self.assertNotIn("vaultboot-install", f)
                self.assertNotIn("vaultboot-gen", f)

    def test_enable_links_equal_systemctl_enable(self):
        self.install()
        ours = self.links(self.root)
        other = os.path.join(self.tmp.name, "other")
        os.makedirs(os.path.join(other, "etc/systemd/system"))
        for f in ("vaultboot.service", "vaultboot-refresh.service", "vaultboot-refresh.timer"):
            shutil.copy(os.path.join(DIST, "systemd", f), os.path.join(other, "etc/systemd/system", f))
        subprocess.run(
            ["systemctl", "--root=" + other, "enable", "vaultboot.service", "vaultboot-refresh.timer"],
            check=True,
            capture_output=True,
        )
        self.assertEqual(ours, self.links(other))
        self.assertEqual(len(ours), 2)

    @staticmethod
    def links(root):
        found = {}
        base = os.path.join(root, "etc/systemd/system")
        for dirpath, _, files in os.walk(base):
            for f in files:
                full = os.path.join(dirpath, f)
                if os.path.islink(full):
                    found[os.path.relpath(full, base)] = os.readlink(full)
        return found

    def test_leaves_cloud_init_as_the_distribution_ships_it(self):
        # No module, no cloud.cfg.d drop-in: a later cloud-init upgrade keeps all its modules.
        before = self.tree("/etc/cloud")
        before_code = self.tree("/usr/lib/python3")
        self.install(self.config)
        self.install(self.config)
        self.assertEqual(self.tree("/etc/cloud"), before)
        self.assertEqual(self.tree("/usr/lib/python3"), before_code)

    def test_bad_arguments(self):
        proc = self.run_sh(INSTALL, self.binary, check=False)
        self.assertIn("usage", proc.stderr)
        proc = self.run_sh(INSTALL, self.binary, DIST, self.config, "extra", check=False)
        self.assertIn("usage", proc.stderr)
        proc = self.run_sh(INSTALL, "/nonexistent", DIST, check=False)
        self.assertIn("binary not found", proc.stderr)
        proc = self.install(env={"GATE_UNITS": "../evil.service"}, check=False)
        self.assertNotEqual(proc.returncode, 0)


@unittest.skipUnless(IS_ROOT, "cleanup.sh lists the outputs in a chroot of DESTDIR: needs root")
class TestCleanup(Root):
    def setUp(self):
        super().setUp()
        self.assertTrue(
            os.access(STATIC_BIN, os.X_OK),
            "no static vaultboot at %s: set VAULTBOOT_STATIC_BIN (tests/packaging/run.sh does)" % STATIC_BIN,
        )
        self.binary = STATIC_BIN
        with open(self.config, "w") as f:
            f.write(CLEANUP_CONFIG)
        # The image's account database: the binary resolves owner names in the chroot.
        self.write("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644)
        self.write("/etc/group", "root:x:0:\n", 0o644)

    def write(self, path, text="x", mode=0o600):
        full = self.p(path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(text)
        os.chmod(full, mode)

    def test_removes_instance_state_keeps_the_install(self):
        self.install(self.config)
        leftovers = [
            "/var/lib/vaultboot/nonce.json",
            "/etc/nginx/tls/server.crt",
            "/etc/nginx/tls/server.key",  # a literal string
            "/etc/nginx/tls/.server.key.vaultboot.Xy12ab",  # staged by a killed run
            "/etc/nginx/tls/.server.crt.vaultboot.0",
            "/etc/app/api.env",  # an inline table
            "/etc/app/i-0123456789abcdef0.json",  # a templated output of the build instance
            "/etc/app/.i-0123456789abcdef0.json.vaultboot.Qq",
            "/run/vaultboot/ad-join.env",
            "/run/vaultboot-status/status.json",
            "/var/lib/cloud/instances/i-0123/sem/config_vaultboot",
            "/var/lib/cloud/data/instance-id",
            "/var/log/cloud-init.log",
            "/var/log/cloud-init-output.log",
            "/etc/ssh/ssh_host_ed25519_key",
            "/etc/ssh/ssh_host_ed25519_key.pub",
            "/etc/krb5.keytab",
            "/var/lib/systemd/credential.secret",  # systemd-creds' host key
        ]
        for path in leftovers:
            self.write(path)
        # Neighbours that are no output and match no output's glob stay.
        kept = ["/etc/app/defaults.json", "/etc/nginx/tls/dhparam.pem", "/etc/nginx/tls/.keep"]
        for path in kept:
            self.write(path)
        os.symlink("/var/lib/cloud/instances/i-0123", self.p("/var/lib/cloud/instance"))
        self.write("/var/lib/cloud/seed/nocloud/user-data", "#cloud-config\n")
        self.write("/etc/machine-id", "0123456789abcdef0123456789abcdef\n", 0o444)
        self.write("/usr/bin/cloud-init", "#!/bin/sh\n", 0o755)
        self.write("/etc/ssh/sshd_config", "# kept\n", 0o644)

        proc = self.run_sh(CLEANUP)

        for path in leftovers + ["/var/lib/cloud/instance"]:
            with self.subTest(path=path):
                self.assertFalse(os.path.lexists(self.p(path)), proc.stdout)
        self.assertIn("removed /etc/app/i-0123456789abcdef0.json", proc.stdout)
        self.assertIn("removed /etc/nginx/tls/.server.key.vaultboot.Xy12ab", proc.stdout)
        for path in kept + ["/var/lib/cloud/seed/nocloud/user-data", "/etc/ssh/sshd_config"]:
            self.assertTrue(os.path.exists(self.p(path)), path)
        self.assertEqual(os.path.getsize(self.p("/etc/machine-id")), 0)
        self.assertEqual(self.mode("/var/lib/vaultboot")[0], 0o700)
        self.assertEqual(os.listdir(self.p("/var/lib/vaultboot")), [])
        for kept in ("/etc/vaultboot/config.toml", "/usr/local/sbin/vaultboot", "/etc/systemd/system/vaultboot.service"):
            self.assertTrue(os.path.exists(self.p(kept)), kept)

    def test_the_packages_commented_out_config_names_no_output(self):
        self.install()
        self.write("/etc/vaultboot/config.toml", "# [vault]\n#address = \"https://x\"\n\n", 0o600)
        self.write("/etc/nginx/tls/server.key")
        proc = self.run_sh(CLEANUP)
        self.assertTrue(os.path.exists(self.p("/etc/nginx/tls/server.key")), proc.stdout)

    def test_a_config_the_binary_refuses_stops_the_cleanup(self):
        self.install()
        self.write("/etc/vaultboot/config.toml", "[vault]\naddress = 42\n", 0o600)
        self.write("/var/lib/vaultboot/nonce.json")
        proc = self.run_sh(CLEANUP, check=False)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("config.toml", proc.stderr)
        self.assertIn("cannot tell which outputs to remove", proc.stderr)
        # It stops before anything is removed: the build fails with the image as it was.
        self.assertTrue(os.path.exists(self.p("/var/lib/vaultboot/nonce.json")))

    def test_keeps_host_keys_without_cloud_init(self):
        self.write("/etc/ssh/ssh_host_rsa_key")
        self.run_sh(CLEANUP)
        self.assertTrue(os.path.exists(self.p("/etc/ssh/ssh_host_rsa_key")))

    def test_on_an_empty_root(self):
        empty = os.path.join(self.tmp.name, "empty")
        os.makedirs(empty)
        subprocess.run(["sh", CLEANUP], env=dict(os.environ, DESTDIR=empty), check=True, capture_output=True)


if __name__ == "__main__":
    unittest.main()
