"""What the issue asks of the systemd units, and the AD join example's shell.

`systemd-analyze verify` / `security` run from run.sh; these tests pin down
the properties that verify cannot see (a wrong but valid value passes it).
"""

import os
import re
import shlex
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SYSTEMD = os.path.join(REPO, "dist", "systemd")


def parse_unit(path):
    """{section: {key: [values...]}} with systemd's line continuation."""
    sections, current, pending = {}, None, ""
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not pending and (not line.strip() or line.lstrip().startswith(("#", ";"))):
                continue
            if line.endswith("\\") and not line.endswith("\\\\"):
                pending += line[:-1] + " "
                continue
            line, pending = pending + line, ""
            m = re.match(r"^\[(.+)\]$", line.strip())
            if m:
                current = sections.setdefault(m.group(1), {})
                continue
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def seconds(text):
    total = 0
    for num, unit in re.findall(r"(\d+)\s*([a-z]+)", text):
        total += int(num) * {"s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}[unit]
    return total


def command_argv(value):
    """An Exec*= value as the argv systemd runs (prefixes, $$ and %% handled)."""
    value = value.lstrip("-@:+!")
    return shlex.split(value.replace("$$", "$").replace("%%", "%"))


class TestVaultbootService(unittest.TestCase):
    u = parse_unit(os.path.join(SYSTEMD, "vaultboot.service"))

    def one(self, section, key):
        values = self.u[section][key]
        self.assertEqual(len(values), 1, key)
        return values[0]

    def test_boot_job_shape(self):
        self.assertEqual(self.one("Service", "Type"), "oneshot")
        self.assertEqual(self.one("Service", "RemainAfterExit"), "yes")
        self.assertIn("network-online.target", self.one("Unit", "Wants").split())
        self.assertIn("network-online.target", self.one("Unit", "After").split())
        self.assertEqual(self.one("Service", "ExecStart"), "/usr/sbin/vaultboot run")
        self.assertEqual(self.one("Install", "WantedBy"), "multi-user.target")
        self.assertNotIn("ConditionPathExists", self.u["Unit"], "a skipped unit would let consumers start")

    def test_timeout_a_little_above_the_default_deadline(self):
        t = seconds(self.one("Service", "TimeoutStartSec"))
        self.assertGreater(t, 300)
        self.assertLessEqual(t, 420)

    def test_sandbox(self):
        s = self.u["Service"]
        self.assertEqual(s["UMask"], ["0077"])
        for key in ("NoNewPrivileges", "PrivateTmp", "ProtectKernelTunables", "ProtectKernelModules",
                    "ProtectKernelLogs", "ProtectControlGroups", "RestrictSUIDSGID", "LockPersonality"):
            self.assertEqual(s[key], ["yes"], key)
        self.assertEqual(s["ProtectHome"], ["yes"])
        self.assertEqual(s["ProtectSystem"], ["strict"])
        self.assertEqual(s["SystemCallFilter"], ["@system-service"])
        self.assertEqual(set(s["RestrictAddressFamilies"][0].split()), {"AF_UNIX", "AF_INET", "AF_INET6"})
        caps = set(s["CapabilityBoundingSet"][0].split())
        self.assertEqual(caps, {"CAP_CHOWN", "CAP_FOWNER", "CAP_DAC_READ_SEARCH"})
        rw = s["ReadWritePaths"][0].split()
        self.assertEqual(rw, ["/etc", "/run"])
        self.assertEqual(s["StateDirectory"], ["vaultboot"])
        self.assertEqual(s["StateDirectoryMode"], ["0700"])
        # /run/vaultboot holds secrets (ad-join.env): nobody else may even search it. The
        # status for monitoring is elsewhere (/run/vaultboot-status, made by vaultboot).
        self.assertEqual(s["RuntimeDirectory"], ["vaultboot"])
        self.assertEqual(s["RuntimeDirectoryMode"], ["0700"])

    def test_retried_only_for_what_time_can_fix(self):
        s = self.u["Service"]
        self.assertEqual(self.one("Service", "Restart"), "on-failure")
        self.assertEqual(seconds(self.one("Service", "RestartSec")), 30)
        prevented = set(self.one("Service", "RestartPreventExitStatus").split())
        self.assertEqual(prevented, {"64", "65", "73", "75", "77", "78"})
        # systemd 252 (Debian 12) does not know these: they would only warn there.
        for key in ("RestartMode", "RestartSteps", "RestartMaxDelaySec", "RestartForceExitStatus"):
            self.assertNotIn(key, s)
        # Retries 30 s apart never reach the default start limit; nothing overrides it.
        self.assertNotIn("StartLimitIntervalSec", self.u["Unit"])
        self.assertNotIn("StartLimitBurst", self.u["Unit"])

    def test_refresh_shares_the_sandbox(self):
        r = parse_unit(os.path.join(SYSTEMD, "vaultboot-refresh.service"))["Service"]
        for key, values in self.u["Service"].items():
            # The refresh is not retried by systemd: its timer is its retry.
            if key in ("RemainAfterExit", "ExecStart", "Restart", "RestartSec", "RestartPreventExitStatus"):
                continue
            self.assertEqual(r.get(key), values, key)
        self.assertNotIn("Restart", r)


class TestReadWritePaths(unittest.TestCase):
    """Every ReadWritePaths= the project ships or tells users to write: a path that an image
    may lack carries systemd's "-" prefix, or the unit fails at namespace setup (226/NAMESPACE)
    and every service gated on it stays down. /etc and /run exist on every system."""

    ALWAYS_THERE = {"/etc", "/run"}

    def places(self):
        docs = [os.path.join(REPO, "README.md")]
        for top in ("docs", "dist", "packer", "cloud-init", "examples"):
            for dirpath, _, files in os.walk(os.path.join(REPO, top)):
                docs += [os.path.join(dirpath, f) for f in files]
        found = []
        for path in docs:
            with open(path, encoding="utf-8", errors="replace") as f:
                for n, line in enumerate(f, 1):
                    for m in re.finditer(r"ReadWritePaths=([^`\n]*)", line):
                        found.append(("%s:%d" % (os.path.relpath(path, REPO), n), m.group(1)))
        return found

    def test_every_optional_path_has_the_dash_prefix(self):
        found = self.places()
        self.assertGreaterEqual(len(found), 3, found)  # both units, README's textfile drop-in
        for place, value in found:
            for p in value.split():
                p = p.rstrip(".,;)")
                if not p.startswith(("/", "-")):
                    continue  # prose: "ReadWritePaths= in a drop-in"
                with self.subTest(place=place, path=p):
                    self.assertTrue(p in self.ALWAYS_THERE or p.startswith("-/"), "%s: %s" % (place, p))


class TestRefresh(unittest.TestCase):
    def test_refresh_service(self):
        u = parse_unit(os.path.join(SYSTEMD, "vaultboot-refresh.service"))
        self.assertEqual(u["Service"]["Type"], ["oneshot"])
        self.assertNotIn("RemainAfterExit", u["Service"], "the timer must be able to start it again")
        self.assertNotIn("Install", u, "started by the timer only")
        # Not Requisite=: a refused start never activates the unit, and OnUnitActiveSec= then
        # has nothing to count from: the timer would stop after a failed boot run.
        self.assertNotIn("Requisite", u["Unit"])
        self.assertIn("vaultboot.service", u["Unit"]["After"][0].split())
        self.assertEqual(len(u["Service"]["ExecStart"]), 1)
        argv = command_argv(u["Service"]["ExecStart"][0])
        self.assertEqual(argv, ["/usr/sbin/vaultboot", "run", "--refresh"])
        self.assertNotIn("EnvironmentFile", u["Service"])
        self.assertNotIn("Environment", u["Service"])

    def test_timer(self):
        u = parse_unit(os.path.join(SYSTEMD, "vaultboot-refresh.timer"))
        self.assertIn("RandomizedDelaySec", u["Timer"])
        self.assertIn("OnUnitActiveSec", u["Timer"])
        self.assertEqual(u["Install"]["WantedBy"], ["timers.target"])

    def test_no_consumer_depends_on_the_refresh(self):
        for dirpath, _, files in os.walk(SYSTEMD):
            for f in files:
                with open(os.path.join(dirpath, f)) as fh:
                    for line in fh:
                        if line.startswith(("Requires=", "BindsTo=", "PartOf=", "Requisite=")):
                            self.assertNotIn("vaultboot-refresh", line, f)

    def test_nginx_drop_in(self):
        u = parse_unit(os.path.join(SYSTEMD, "examples", "nginx.service.d", "10-vaultboot.conf"))
        self.assertEqual(u["Unit"]["Requires"], ["vaultboot.service"])
        self.assertEqual(u["Unit"]["After"], ["vaultboot.service"])

    def test_a_successful_run_starts_its_consumer(self):
        # Once one of vaultboot.service's automatic retries succeeds, nginx is started; not by
        # Wants= (started again the moment the unit waits to retry, which cuts RestartSec short
        # on systemd >= 254), and without blocking (nginx's job waits for vaultboot: After=).
        u = parse_unit(os.path.join(SYSTEMD, "examples", "vaultboot.service.d", "10-nginx.conf"))
        self.assertEqual(u, {"Service": {"ExecStartPost": ["-systemctl start --no-block nginx.service"]}})
        self.assertEqual(command_argv(u["Service"]["ExecStartPost"][0]),
                         ["systemctl", "start", "--no-block", "nginx.service"])


class TestAdJoin(unittest.TestCase):
    """Runs the unit's own shell with a fake `realm` that records what it got."""

    u = parse_unit(os.path.join(SYSTEMD, "examples", "vaultboot-ad-join.service"))
    PASSWORD = "p a'ss\"wo$rd`x\\y -U root"

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        t = self.tmp.name
        self.run_dir = os.path.join(t, "run") + "/"
        os.makedirs(self.run_dir)
        self.keytab = os.path.join(t, "krb5.keytab")
        bindir = os.path.join(t, "bin")
        os.makedirs(bindir)
        self.rec = os.path.join(t, "rec")
        with open(os.path.join(bindir, "realm"), "w") as f:
            f.write(
                "#!/bin/sh\n"
                'printf "%%s\\n" "$@" > %(r)s.argv\n'
                "cat > %(r)s.stdin\n"
                "env > %(r)s.env\n" % {"r": self.rec}
            )
        os.chmod(os.path.join(bindir, "realm"), 0o755)
        self.env = {"PATH": bindir + ":/usr/bin:/bin", "AD_DOMAIN": "corp.example.com", "AD_USER": "svc-join"}

    def tearDown(self):
        self.tmp.cleanup()

    def localise(self, argv):
        return [a.replace("/run/vaultboot/", self.run_dir).replace("/etc/krb5.keytab", self.keytab) for a in argv]

    def run_exec(self, key):
        argv = self.localise(command_argv(self.u["Service"][key][0]))
        return subprocess.run(argv, env=self.env, capture_output=True, text=True)

    def recorded(self, what):
        with open("%s.%s" % (self.rec, what)) as f:
            return f.read()

    @staticmethod
    def env_line(name, value):
        # vaultboot's env format (src/secrets.rs): NAME="value", \ " $ ` escaped.
        return '%s="%s"\n' % (name, re.sub(r'([\\"$`])', r"\\\1", value))

    def test_env_file_password_on_stdin_only(self):
        with open(self.run_dir + "ad-join.env", "w") as f:
            f.write(self.env_line("username", "joiner") + self.env_line("password", self.PASSWORD))
        proc = self.run_exec("ExecStart")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(self.recorded("stdin"), self.PASSWORD)
        self.assertEqual(self.recorded("argv").split("\n")[:-1], ["join", "-U", "joiner", "corp.example.com"])
        self.assertNotIn(self.PASSWORD, self.recorded("env"))
        self.assertNotIn("password", self.recorded("env"))

    def test_raw_password_file(self):
        with open(self.run_dir + "ad-join.password", "w") as f:
            f.write(self.PASSWORD)
        proc = self.run_exec("ExecStart")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(self.recorded("stdin"), self.PASSWORD)
        self.assertEqual(self.recorded("argv").split("\n")[:-1], ["join", "-U", "svc-join", "corp.example.com"])

    def test_missing_password_fails(self):
        with open(self.run_dir + "ad-join.env", "w") as f:
            f.write(self.env_line("username", "joiner"))
        self.assertNotEqual(self.run_exec("ExecStart").returncode, 0)

    def test_file_removed_after_success_and_failure(self):
        self.assertEqual(self.u["Service"]["ExecStartPost"], self.u["Service"]["ExecStopPost"])
        for key in ("ExecStartPost", "ExecStopPost"):
            for name in ("ad-join.env", "ad-join.password"):
                open(self.run_dir + name, "w").close()
            self.assertEqual(self.run_exec(key).returncode, 0)
            self.assertEqual(os.listdir(self.run_dir), [])

    def test_condition_skips_and_cleans_once_joined(self):
        open(self.run_dir + "ad-join.env", "w").close()
        self.assertEqual(self.run_exec("ExecCondition").returncode, 0, "not joined yet: run")
        self.assertTrue(os.path.exists(self.run_dir + "ad-join.env"))
        open(self.keytab, "w").close()
        proc = self.run_exec("ExecCondition")
        self.assertEqual(proc.returncode, 1, "1 = skip the unit, not a failure")
        self.assertEqual(os.listdir(self.run_dir), [])

    def test_unit_shape(self):
        unit = self.u["Unit"]
        self.assertEqual(unit["Requires"], ["vaultboot.service"])
        self.assertIn("vaultboot.service", unit["After"][0].split())
        self.assertEqual(
            unit["ConditionPathExists"],
            ["|/run/vaultboot/ad-join.env", "|/run/vaultboot/ad-join.password"],
        )
        for value in self.u["Service"]["ExecStart"]:
            self.assertNotIn("--one-time-password", value)
            self.assertNotIn("--stdin-password=", value)


if __name__ == "__main__":
    unittest.main()
