"""cc_vaultboot against Debian's real cloud-init (python3-cloudinit 22.4).

Run with Debian's /usr/bin/python3 (the one that can import cloudinit):
    /usr/bin/python3 -m pytest tests/packaging
"""

import copy
import os
import stat
import sys
import tempfile
import tomllib
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CLOUD_INIT_DIR = os.path.join(REPO, "cloud-init")
EXAMPLES = os.path.join(CLOUD_INIT_DIR, "examples")
sys.path.insert(0, CLOUD_INIT_DIR)

import cc_vaultboot  # noqa: E402
from cloudinit import distros, helpers, importer, type_utils  # noqa: E402
from cloudinit import config as cloudinit_config  # noqa: E402
from cloudinit.cloud import Cloud  # noqa: E402
from cloudinit.config import modules  # noqa: E402
from cloudinit.settings import PER_INSTANCE  # noqa: E402
from cloudinit.sources.DataSourceNone import DataSourceNone  # noqa: E402


def load_example(name):
    with open(os.path.join(EXAMPLES, name), encoding="utf-8") as f:
        text = f.read()
    assert text.startswith("#cloud-config\n"), name
    return yaml.safe_load(text)


GOOD = {
    "vault": {"address": "https://vault.internal:8200"},
    "auth": {"role": "web"},
    "secret": [
        {
            "name": "tls",
            "path": "pki_int/issue/web",
            "data": {"common_name": "{{ local-hostname }}", "ttl": "72h"},
            "file": [
                {
                    "path": "/etc/nginx/tls/server.crt",
                    "fields": ["certificate", "ca_chain?"],
                    "mode": "0644",
                    "on_change": ["systemctl", "try-reload-or-restart", "nginx"],
                },
                {"path": "/etc/nginx/tls/server.key", "fields": ["private_key"]},
            ],
        },
        {
            "name": "ad-join",
            "path": "secret/data/ad/join",
            "file": [
                {
                    "path": "/run/vaultboot/ad-join.env",
                    "format": "env",
                    "fields": ["username", "password"],
                }
            ],
        },
    ],
}


class RootedTest(unittest.TestCase):
    """Every test writes under a temporary root instead of /."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name
        self._old_root = cc_vaultboot.ROOT
        cc_vaultboot.ROOT = self.root
        self.target = os.path.join(self.root, "etc/vaultboot/config.toml")

    def tearDown(self):
        cc_vaultboot.ROOT = self._old_root
        self.tmp.cleanup()

    def make_cloud(self):
        state = os.path.join(self.root, "var/lib/cloud")
        os.makedirs(state, exist_ok=True)
        paths = helpers.Paths(
            {"cloud_dir": state, "run_dir": state, "templates_dir": state}
        )
        distro = distros.fetch("debian")("debian", {}, paths)
        ds = DataSourceNone({}, distro, paths)
        paths.datasource = ds
        return Cloud(ds, paths, {}, distro, helpers.Runners(paths))

    def read_written(self):
        with open(self.target, "rb") as f:
            return tomllib.load(f)


class TestAsCloudInitLoadsIt(RootedTest):
    def test_found_and_accepted_by_cloudinit_module_loader(self):
        # What cloudinit.config.modules._fixup_modules does with "vaultboot".
        mod_name = modules.form_module_name("vaultboot")
        self.assertEqual(mod_name, "cc_vaultboot")
        locs, looked = importer.find_module(
            mod_name, ["", type_utils.obj_name(cloudinit_config)], ["handle"]
        )
        self.assertTrue(locs, looked)
        mod = importer.import_module(locs[0])
        modules.validate_module(mod, "vaultboot")  # raises on a bad meta / schema attr
        self.assertEqual(mod.meta["frequency"], PER_INSTANCE)
        self.assertEqual(mod.meta["activate_by_schema_keys"], ["vaultboot"])
        self.assertFalse(hasattr(mod, "schema"))

    def test_handle_has_the_signature_this_cloud_init_calls(self):
        import inspect

        from cloudinit import version

        params = list(inspect.signature(cc_vaultboot.handle).parameters)
        if version.version_string().startswith("22."):
            self.assertEqual(params, ["name", "cfg", "cloud", "log", "args"])
        else:
            self.assertEqual(params, ["name", "cfg", "cloud", "args"])

    def test_runs_once_per_instance_through_cloud_run(self):
        cloud = self.make_cloud()
        cfg = {"vaultboot": copy.deepcopy(GOOD)}
        import logging

        log = logging.getLogger("test")
        # Exactly how modules._run_modules (22.4) calls it.
        func_args = ["vaultboot", cfg, cloud, log, []]
        ran, _ = cloud.run("config-vaultboot", cc_vaultboot.handle, func_args, freq=PER_INSTANCE)
        self.assertTrue(ran)
        self.assertTrue(os.path.exists(self.target))
        os.unlink(self.target)
        ran, _ = cloud.run("config-vaultboot", cc_vaultboot.handle, func_args, freq=PER_INSTANCE)
        self.assertFalse(ran, "a second run on the same instance must be skipped")
        self.assertFalse(os.path.exists(self.target))


class TestWritesConfig(RootedTest):
    def handle(self, cfg):
        import logging

        cc_vaultboot.handle("vaultboot", cfg, self.make_cloud(), logging.getLogger("t"), [])

    def test_writes_toml_equal_to_the_mapping(self):
        self.handle({"vaultboot": copy.deepcopy(GOOD)})
        self.assertEqual(self.read_written(), GOOD)

    def test_mode_owner_and_directory(self):
        self.handle({"vaultboot": copy.deepcopy(GOOD)})
        st = os.stat(self.target)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        self.assertEqual(st.st_uid, os.geteuid())
        d = os.stat(os.path.dirname(self.target))
        self.assertEqual(stat.S_IMODE(d.st_mode), 0o700)
        # No staging file left behind.
        self.assertEqual(os.listdir(os.path.dirname(self.target)), ["config.toml"])

    def test_replaces_atomically(self):
        os.makedirs(os.path.dirname(self.target))
        with open(self.target, "w") as f:
            f.write("old")
        ino = os.stat(self.target).st_ino
        self.handle({"vaultboot": copy.deepcopy(GOOD)})
        self.assertNotEqual(os.stat(self.target).st_ino, ino, "must rename a new file into place")
        self.assertEqual(self.read_written(), GOOD)

    def test_module_example_from_user_data(self):
        cfg = load_example("user-data-module.yaml")
        self.handle(cfg)
        written = self.read_written()
        self.assertEqual(written, cfg["vaultboot"])
        self.assertEqual(written["secret"][0]["data"]["common_name"], "{{ local-hostname }}")
        self.assertEqual(written["secret"][0]["file"][0]["mode"], "0644")

    def test_meta_example(self):
        for example in cc_vaultboot.meta["examples"]:
            cfg = yaml.safe_load(example)
            self.handle(cfg)
            self.assertEqual(self.read_written(), cfg["vaultboot"])

    def test_no_vaultboot_key_writes_nothing(self):
        self.handle({"runcmd": ["true"]})
        self.assertFalse(os.path.exists(self.target))

    def test_every_section_and_value_type(self):
        cfg = copy.deepcopy(GOOD)
        cfg["vault"].update(
            {
                "ca_cert": "/etc/vaultboot/vault-ca.pem",
                "tls_server_name": "vault.internal",
                "namespace": "team-a",
                "request_timeout": "10s",
                "proxy": "http://proxy.internal:3128",
            }
        )
        cfg["auth"].update({"method": "ec2", "mount": "aws/prod", "revoke_token": False})
        cfg["imds"] = {"endpoint": "http://[fd00:ec2::254]", "token_ttl": "60s", "signature": "pkcs7"}
        cfg["state"] = {"dir": "/var/lib/vaultboot"}
        cfg["retry"] = {"deadline": "1h 30m", "max_delay": "20s"}
        cfg["secret"][0]["data"] = {
            "common_name": "{{ local-hostname }}",
            "alt_names": ["a.example", "{{ instance-id }}.example"],
            "private_key_bits": 4096,
            "exclude_cn_from_sans": True,
            "ratio": 0.5,
            "nested": {"dotted.key": "x", "with space": "y", "": "empty key"},
        }
        self.handle({"vaultboot": cfg})
        self.assertEqual(self.read_written(), cfg)


class TestTomlEmitter(unittest.TestCase):
    def roundtrip(self, value):
        return tomllib.loads("v = " + cc_vaultboot.toml_value(value))["v"]

    def test_strings_are_escaped_per_toml(self):
        for s in [
            'quote " and backslash \\ and both \\"',
            "newline\nreturn\rtab\tbackspace\bformfeed\f",
            "controls \x00\x01\x1f and DEL \x7f",
            "unicode é ü 漢字 🙂 and a lone \u2028",
            "{{ local-hostname }}",
            "'single' and \"\"\" triple",
            "",
            "trailing backslash \\",
        ]:
            self.assertEqual(self.roundtrip(s), s)

    def test_keys_that_are_not_bare_are_quoted(self):
        data = {"a.b": 1, "with space": 2, "": 3, "ok_key-1": 4, 'q"uote': 5, "é": 6}
        self.assertEqual(self.roundtrip(data), data)
        self.assertIn("ok_key-1 = 4", cc_vaultboot.toml_value(data))

    def test_scalars_lists_and_nesting(self):
        for v in [True, False, 0, -7, 2**40, 1.5, 1e300, -0.25, [], [1, "a", [True]], {}, {"a": {"b": [{"c": 1}]}}]:
            self.assertEqual(self.roundtrip(v), v)

    def test_layout(self):
        text = cc_vaultboot.to_toml(GOOD)
        self.assertIn("[vault]\naddress = \"https://vault.internal:8200\"", text)
        self.assertIn("[[secret]]\nname = \"tls\"", text)
        self.assertIn("  [[secret.file]]\n  path = \"/etc/nginx/tls/server.crt\"", text)
        self.assertIn('data = { common_name = "{{ local-hostname }}", ttl = "72h" }', text)
        self.assertEqual(tomllib.loads(text), GOOD)


class TestRefusesBadInput(RootedTest):
    def refused(self, mutate, *needles):
        cfg = copy.deepcopy(GOOD)
        mutate(cfg)
        import logging

        with self.assertRaises(cc_vaultboot.VaultbootConfigError) as ctx:
            cc_vaultboot.handle(
                "vaultboot", {"vaultboot": cfg}, self.make_cloud(), logging.getLogger("t"), []
            )
        msg = str(ctx.exception)
        for needle in needles:
            self.assertIn(needle, msg)
        self.assertFalse(os.path.exists(self.target), "nothing may be written on error")
        return msg

    def test_unknown_key_deep_names_its_path(self):
        def m(c):
            c["secret"][1]["file"][0]["moed"] = "0600"

        self.refused(m, "vaultboot.secret[1].file[0].moed: unknown key")

    def test_mode_as_yaml_number_names_its_path(self):
        def m(c):
            c["secret"][1]["file"][0]["mode"] = 0o640  # what YAML makes of 0640

        self.refused(m, "vaultboot.secret[1].file[0].mode:", "quoted octal string", "416")

    def test_bad_mode_strings(self):
        for bad, why in [("rw-r--r--", "octal mode"), ("4755", "setuid"), ("0888", "octal mode")]:
            with self.subTest(bad=bad):
                def m(c, bad=bad):
                    c["secret"][0]["file"][1]["mode"] = bad

                self.refused(m, "vaultboot.secret[0].file[1].mode:", why)

    def test_unknown_top_level_and_section_keys(self):
        self.refused(lambda c: c.update(extra=1), "vaultboot.extra: unknown key")
        self.refused(lambda c: c["vault"].update(adress="x"), "vaultboot.vault.adress: unknown key")

    def test_required_keys(self):
        self.refused(lambda c: c.pop("vault"), "vaultboot.vault: required key is missing")
        self.refused(lambda c: c["auth"].pop("role"), "vaultboot.auth.role: required key is missing")
        self.refused(lambda c: c["secret"][0].pop("file"), "vaultboot.secret[0].file: required key")
        self.refused(
            lambda c: c["secret"][0]["file"][0].pop("fields"),
            "vaultboot.secret[0].file[0].fields: required key",
        )

    def test_plain_http_refused_unless_insecure(self):
        self.refused(
            lambda c: c["vault"].update(address="http://vault:8200"),
            "vaultboot.vault.address:",
            "insecure_http",
        )
        cfg = copy.deepcopy(GOOD)
        cfg["vault"].update(address="http://127.0.0.1:8200", insecure_http=True)
        cc_vaultboot.validate(cfg)

    def test_address_with_path(self):
        self.refused(lambda c: c["vault"].update(address="https://v/v1"), "vaultboot.vault.address:")

    def test_unknown_template(self):
        self.refused(
            lambda c: c["secret"][0]["data"].update(common_name="{{ hostname }}"),
            "vaultboot.secret[0].data.common_name: unknown template {{ hostname }}",
        )
        self.refused(
            lambda c: c["secret"][0]["file"][0].update(path="/etc/{{ nope }}/x"),
            "vaultboot.secret[0].file[0].path: unknown template",
        )

    def test_duplicates(self):
        self.refused(lambda c: c["secret"][1].update(name="tls"), "vaultboot.secret[1].name: duplicate secret name")

        def dup_path(c):
            c["secret"][1]["file"][0]["path"] = "/etc/nginx/tls/server.key"

        self.refused(dup_path, "vaultboot.secret[1].file[0].path: duplicate output path")

    def test_wrong_types_and_values(self):
        self.refused(lambda c: c.update(secret={"name": "x"}), "vaultboot.secret: must be a list")
        self.refused(lambda c: c["auth"].update(method="token"), "vaultboot.auth.method: must be one of")
        self.refused(lambda c: c["auth"].update(revoke_token="no"), "vaultboot.auth.revoke_token: must be true or false")
        self.refused(lambda c: c["auth"].update(sts_region="us-east-1"), 'vaultboot.auth.sts_region: only valid with auth.method = "iam"')
        self.refused(lambda c: c.update(retry={"deadline": "5 minutes please"}), "vaultboot.retry.deadline: must be a duration")
        self.refused(lambda c: c.update(retry={"deadline": "0s"}), "vaultboot.retry.deadline: must be longer than zero")
        self.refused(lambda c: c.update(imds={"endpoint": "https://169.254.169.254"}), "vaultboot.imds.endpoint:")
        self.refused(lambda c: c.update(state={"dir": "var/lib/x"}), "vaultboot.state.dir: must be an absolute path")
        self.refused(lambda c: c["secret"][0].update(path="/v1/pki/issue/x"), "vaultboot.secret[0].path: must be a Vault path")
        self.refused(lambda c: c["secret"][0].update(data=["x"]), "vaultboot.secret[0].data: must be a mapping")
        self.refused(lambda c: c["secret"][0]["data"].update(ttl=None), "vaultboot.secret[0].data.ttl:")
        self.refused(lambda c: c["secret"][0]["file"][0].update(path="relative/x"), "must be an absolute path")
        self.refused(lambda c: c["secret"][0]["file"][0].update(path="/etc/../x"), "must not contain . or ..")
        self.refused(lambda c: c["secret"][0]["file"][0].update(path="/x"), "files directly in / are refused")
        self.refused(lambda c: c["secret"][0]["file"][0].update(fields=[]), "vaultboot.secret[0].file[0].fields: must not be empty")
        self.refused(lambda c: c["secret"][0]["file"][0].update(fields=["a", "a?"]), "fields[1]: 'a' is listed twice")
        self.refused(lambda c: c["secret"][1]["file"][0].update(fields=["user-name"]), "cannot be an environment variable name")
        self.refused(lambda c: c["secret"][0]["file"][0].update(format="yaml"), "vaultboot.secret[0].file[0].format: must be one of")
        self.refused(lambda c: c["secret"][0]["file"][0].update(on_change="systemctl reload nginx"), "on_change: must be a list of strings")
        self.refused(lambda c: c["secret"][0]["file"][0].update(owner="bad name"), "vaultboot.secret[0].file[0].owner:")

    def test_all_errors_reported_at_once(self):
        def m(c):
            c["vault"]["adress"] = "x"
            c["auth"]["method"] = "kerberos"

        msg = self.refused(m, "vaultboot.vault.adress", "vaultboot.auth.method")
        self.assertTrue(msg.startswith("invalid vaultboot configuration, nothing written:"))

    def test_not_a_mapping(self):
        import logging

        with self.assertRaises(cc_vaultboot.VaultbootConfigError) as ctx:
            cc_vaultboot.handle("vaultboot", {"vaultboot": ["x"]}, self.make_cloud(), logging.getLogger("t"), [])
        self.assertIn("vaultboot: must be a mapping, not a list", str(ctx.exception))

    def test_failure_keeps_the_existing_config(self):
        os.makedirs(os.path.dirname(self.target))
        with open(self.target, "w") as f:
            f.write("previous")
        import logging

        cfg = copy.deepcopy(GOOD)
        cfg["auth"]["role"] = 5
        with self.assertRaises(cc_vaultboot.VaultbootConfigError):
            cc_vaultboot.handle("vaultboot", {"vaultboot": cfg}, self.make_cloud(), logging.getLogger("t"), [])
        with open(self.target) as f:
            self.assertEqual(f.read(), "previous")


class TestWriteFilesExample(unittest.TestCase):
    """The write_files example carries the same configuration as TOML."""

    def test_config_entry(self):
        cfg = load_example("user-data-write-files.yaml")
        entries = {e["path"]: e for e in cfg["write_files"]}
        entry = entries["/etc/vaultboot/config.toml"]
        self.assertEqual(entry["permissions"], "0600")
        self.assertEqual(entry["owner"], "root:root")
        self.assertFalse(entry.get("defer", False), "deferred write_files run too late")
        self.assertNotIn("runcmd", cfg)
        toml = tomllib.loads(entry["content"])
        cc_vaultboot.validate(toml)  # same rules as the module
        self.assertEqual(toml["auth"]["role"], "web")

    def test_both_examples_describe_the_same_config(self):
        module = load_example("user-data-module.yaml")["vaultboot"]
        wf = load_example("user-data-write-files.yaml")
        toml = tomllib.loads(
            {e["path"]: e for e in wf["write_files"]}["/etc/vaultboot/config.toml"]["content"]
        )
        # The module example also fetches the AD join secret and sets the mount.
        module = copy.deepcopy(module)
        module["secret"] = [s for s in module["secret"] if s["name"] != "ad-join"]
        module["auth"].pop("mount")
        self.assertEqual(module, toml)


if __name__ == "__main__":
    unittest.main()
