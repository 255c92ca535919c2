"""packer/install.sh and packer/cleanup.sh on a temporary root (DESTDIR)."""

import filecmp
import os
import shutil
import stat
import subprocess
import tempfile
import unittest

import yaml
from cloudinit import util as ci_util

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
INSTALL = os.path.join(REPO, "packer", "install.sh")
CLEANUP = os.path.join(REPO, "packer", "cleanup.sh")
DIST = os.path.join(REPO, "dist")
CI = os.path.join(REPO, "cloud-init")
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
VB = ["vaultboot", "once-per-instance"]


def module_names(mods):
    out = []
    for m in mods:
        if isinstance(m, list):
            m = m[0]
        elif isinstance(m, dict):
            m = m["name"]
        out.append(m.replace("-", "_"))
    return out


def shipped_modules():
    with open(os.path.join(CI, "cloud.cfg.d", "99_vaultboot.cfg")) as f:
        return yaml.safe_load(f)["cloud_init_modules"]


class Root(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = os.path.join(self.tmp.name, "root")
        os.makedirs(os.path.join(self.root, "etc/cloud/cloud.cfg.d"))
        shutil.copy(HOST_CLOUD_CFG, os.path.join(self.root, "etc/cloud/cloud.cfg"))
        for f in os.listdir("/etc/cloud/cloud.cfg.d"):
            if f.endswith(".cfg") and f != "99_vaultboot.cfg":
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
        args = [self.binary, DIST, CI, *extra]
        return self.run_sh(INSTALL, *args, env=env, check=check)

    def mode(self, path):
        st = os.lstat(self.p(path))
        return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid

    def effective_modules(self):
        cfg = ci_util.read_conf_with_confd(self.p("/etc/cloud/cloud.cfg"))
        return cfg["cloud_init_modules"]


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
            "/usr/lib/python3/dist-packages/cloudinit/config/cc_vaultboot.py": 0o644,
            "/etc/cloud/cloud.cfg.d/99_vaultboot.cfg": 0o644,
            "/etc/vaultboot": 0o700,
            "/etc/vaultboot/config.toml": 0o600,
            "/var/lib/vaultboot": 0o700,
            "/usr/local/share/doc/vaultboot/examples/vaultboot-ad-join.service": 0o644,
        }
        for path, mode in expect.items():
            with self.subTest(path=path):
                m, u, g = self.mode(path)
                self.assertEqual(oct(m), oct(mode))
                self.assertEqual(u, uid)
                if IS_ROOT:
                    self.assertEqual(g, 0)
        self.assertTrue(filecmp.cmp(self.binary, self.p("/usr/local/sbin/vaultboot"), shallow=False))
        self.assertTrue(filecmp.cmp(self.config, self.p("/etc/vaultboot/config.toml"), shallow=False))
        self.assertTrue(filecmp.cmp(os.path.join(CI, "cc_vaultboot.py"), os.path.join(self.ccdir, "cc_vaultboot.py"), shallow=False))
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

    def test_registers_module_without_losing_any(self):
        before = self.effective_modules()
        self.install()
        after = self.effective_modules()
        names = module_names(before)
        i = names.index("write_files")
        self.assertEqual(after, before[: i + 1] + [VB] + before[i + 1 :])

    def test_shipped_cfg_matches_debian_cloud_init(self):
        # The static file is what install.sh generates for this cloud-init:
        # if Debian's list changes, this fails and the file must be refreshed.
        self.install()
        with open(self.p("/etc/cloud/cloud.cfg.d/99_vaultboot.cfg")) as f:
            generated = yaml.safe_load(f)["cloud_init_modules"]
        self.assertEqual(generated, shipped_modules())

    def test_respects_a_distribution_drop_in_list(self):
        custom = ["seed_random", ["write_files", "once-per-instance"], "growpart", "my_site_module"]
        with open(self.p("/etc/cloud/cloud.cfg.d/50_site.cfg"), "w") as f:
            yaml.safe_dump({"cloud_init_modules": custom}, f)
        self.install()
        self.assertEqual(
            self.effective_modules(),
            ["seed_random", ["write_files", "once-per-instance"], VB, "growpart", "my_site_module"],
        )

    def test_boot_time_schema_check_stays_clean(self):
        # At boot, 22.4 validates system config merged with user-data and logs
        # "Invalid cloud-config provided" on any error; a bare "vaultboot" in
        # cloud_init_modules is one (not in its module enum).
        from cloudinit.config.schema import get_schema, validate_cloudconfig_schema

        self.install()
        system = ci_util.read_conf_with_confd(self.p("/etc/cloud/cloud.cfg"))
        validate_cloudconfig_schema(system, get_schema(), strict=True)
        examples = os.path.join(CI, "examples")
        for name in sorted(os.listdir(examples)):
            with open(os.path.join(examples, name)) as f:
                user = yaml.safe_load(f)
            with self.subTest(example=name):
                merged = ci_util.mergemanydict([user, system])
                validate_cloudconfig_schema(merged, get_schema(), strict=True)
        bare = dict(system, cloud_init_modules=["vaultboot"])
        with self.assertRaises(Exception):
            validate_cloudconfig_schema(bare, get_schema(), strict=True)

    def test_idempotent(self):
        self.install(self.config)
        first = self.effective_modules()
        self.install(self.config)
        self.assertEqual(self.effective_modules(), first)
        self.assertEqual(module_names(first).count("vaultboot"), 1)

    def test_refuses_to_guess_without_yaml(self):
        proc = self.install(env={"PYTHON": "/bin/false"}, check=False)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("python3-yaml", proc.stderr)
        proc = self.install(env={"PYTHON": "/bin/false", "VAULTBOOT_STATIC_CLOUD_CFG": "1"})
        self.assertEqual(self.effective_modules(), shipped_modules())

    def test_without_cloud_init_installs_the_rest(self):
        shutil.rmtree(self.p("/usr/lib/python3"))
        proc = self.install(self.config)
        self.assertIn("cloud-init not found", proc.stdout)
        self.assertFalse(os.path.exists(self.p("/etc/cloud/cloud.cfg.d/99_vaultboot.cfg")))
        self.assertTrue(os.path.exists(self.p("/etc/systemd/system/vaultboot.service")))

    def test_bad_arguments(self):
        proc = self.run_sh(INSTALL, self.binary, DIST, check=False)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("usage", proc.stderr)
        proc = self.run_sh(INSTALL, "/nonexistent", DIST, CI, check=False)
        self.assertIn("binary not found", proc.stderr)
        proc = self.install(env={"GATE_UNITS": "../evil.service"}, check=False)
        self.assertNotEqual(proc.returncode, 0)


class TestCleanup(Root):
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
            "/run/vaultboot/ad-join.env",
            "/var/lib/cloud/instances/i-0123/sem/config_vaultboot",
            "/var/lib/cloud/data/instance-id",
            "/var/log/cloud-init.log",
            "/var/log/cloud-init-output.log",
            "/etc/ssh/ssh_host_ed25519_key",
            "/etc/ssh/ssh_host_ed25519_key.pub",
            "/etc/krb5.keytab",
        ]
        for path in leftovers:
            self.write(path)
        os.symlink("/var/lib/cloud/instances/i-0123", self.p("/var/lib/cloud/instance"))
        self.write("/var/lib/cloud/seed/nocloud/user-data", "#cloud-config\n")
        self.write("/etc/machine-id", "0123456789abcdef0123456789abcdef\n", 0o444)
        self.write("/usr/bin/cloud-init", "#!/bin/sh\n", 0o755)
        self.write("/etc/ssh/sshd_config", "# kept\n", 0o644)
        self.write("/etc/nginx/tls/i-0123.key")  # a templated output's instance file

        proc = self.run_sh(CLEANUP)

        for path in leftovers + ["/var/lib/cloud/instance"]:
            with self.subTest(path=path):
                self.assertFalse(os.path.lexists(self.p(path)))
        self.assertIn("templated output path left alone: /etc/nginx/tls/{{ instance-id }}.key", proc.stdout)
        self.assertTrue(os.path.exists(self.p("/var/lib/cloud/seed/nocloud/user-data")))
        self.assertEqual(os.path.getsize(self.p("/etc/machine-id")), 0)
        self.assertTrue(os.path.exists(self.p("/etc/ssh/sshd_config")))
        self.assertEqual(self.mode("/var/lib/vaultboot")[0], 0o700)
        self.assertEqual(os.listdir(self.p("/var/lib/vaultboot")), [])
        for kept in ("/etc/vaultboot/config.toml", "/usr/local/sbin/vaultboot", "/etc/systemd/system/vaultboot.service"):
            self.assertTrue(os.path.exists(self.p(kept)), kept)

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
