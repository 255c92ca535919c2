//! A fleet booting at once: hundreds (or a thousand) real `vaultboot` processes whose first
//! logins reach Vault together, against one Vault simulator that rate-limits logins (429 with Retry-After),
//! answers a few percent of requests with 5xx and, in the scale-out variants, checks each ec2
//! login with EC2 `DescribeInstances` behind a token bucket (AWS's Describe* bucket: burst 100,
//! 20 per second), answering throttled logins as Vault does once its SDK retries are spent (400
//! quoting `RequestLimitExceeded`). Every agent has its own instance (its own IMDS simulator, so
//! a distinct identity document and instance id), state directory and output file.
//!
//! The start: shells blocked on a FIFO exec vaultboot when it closes, and each agent's first
//! login is held at Vault (the start line) until every agent's is there, then all are let go
//! at once, so that the fleet starts together however long this machine takes to exec them.
//!
//! Asserted: every agent's first login was at the start line when it was released; every agent succeeds inside its deadline and revokes its
//! token; none spins (after a 429 an agent waits at least Retry-After; every request is the
//! first or follows a failure; the 429s fit the time it ran at one per Retry-After; the blind
//! failures — EC2 throttling, 5xx — fit what the growing back-off allows in that time); the
//! last agent finishes within the bound (of the ideal: agents / the slowest rate, the login
//! quota or EC2's refill); the fleet's cost stays within bounds (Vault requests per agent, mean
//! and p99; for 1000 agents the DescribeInstances calls behind the logins). It prints the
//! figures: how the first logins reached the start line, requests per agent, finish times (from
//! the release), the slowest agents' requests and the login attempts over time.
//!
//! Three variants:
//! - `fleet_of_100_scaling_out_through_ec2_throttling`, `#[ignore]`d but run by
//!   tests/run-all.sh in a stage of its own (a load test times the machine: it runs when
//!   nothing else of CI does): 100 agents, EC2 bucket 10 + 10/s, login quota 50/s, 3 % 5xx,
//!   `retry.max_delay = "2s"`; bound 2 x ideal + 10 s (generous: a debug build on 2 cores);
//!   Vault requests per agent mean <= 7.0, p99 <= 12.
//! - `fleet_of_1000_scaling_out_through_ec2_throttling`, `#[ignore]`d: 1000 agents, EC2 bucket 100 + 20/s, login quota 50/s, 3 % 5xx, the default back-off (`max_delay`
//!   20 s, deadline 5 min); bound 1.3 x (1000 / 20 per second = 50 s); Vault requests per
//!   agent mean <= 8, p99 <= 15; DescribeInstances <= 1300.
//! - `fleet_of_300_boots_within_the_rate_limit`, `#[ignore]`d: 300 agents, login quota 50/s, 3 % 5xx, no EC2 limit; bound 1.5 x 6 s.
//!
//! ```sh
//! cargo test --release --test fleet -- --ignored --nocapture
//! cargo test --release --test fleet fleet_of_1000 -- --ignored --nocapture
//! ```
//!
//! Knobs (environment, for the ignored variants): FLEET_AGENTS, FLEET_RATE (logins per
//! second), FLEET_RETRY_AFTER (seconds), FLEET_5XX_EVERY (one injected 5xx after every this many
//! Vault requests; 30: about 3 %), FLEET_EC2_BURST and FLEET_EC2_REFILL (the DescribeInstances
//! bucket; burst 0: no EC2 limit), FLEET_MAX_DELAY (the agents' retry.max_delay); for every
//! variant FLEET_AGENT_BIN (another vaultboot binary to run; default: this build's) and
//! FLEET_REPORT (a file to write the figures to).

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vaultboot_sim::{
    Fault, Gate, Identity, ImdsSim, RecordedRequest, Signer, VaultOptions, VaultSim,
};

const LOGIN: &str = "/v1/auth/aws/login";
const REVOKE: &str = "/v1/auth/token/revoke-self";
const SECRET_PREFIX: &str = "/v1/secret/data/fleet/";
/// How long after the FIFO opens every agent's first login may take to reach the start line:
/// generous, for a loaded machine that spreads 1000 exec()s over several seconds.
const GATHER: Duration = Duration::from_secs(20);
/// The agents' `vault.request_timeout`: longer than GATHER, so that no first login held at the
/// start line is given up (no other request of the scenario waits anywhere near it).
const REQUEST_TIMEOUT: &str = "30s";

fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn instance_id(i: usize) -> String {
    format!("i-0f1ee7{i:011x}")
}

fn password(i: usize) -> String {
    format!("fleet-secret-{i:03} \"$HOME\" `id` \\ end")
}

struct Agent {
    dir: PathBuf,
    child: Option<Child>,
    finished: Option<Instant>,
    status: Option<i32>,
}

/// Per-agent view of what the simulators saw.
#[derive(Default, Clone)]
struct Seen {
    imds: usize,
    vault: usize,
    logins: Vec<(Instant, u16)>,
    other: Vec<(Instant, u16)>,
    revoked: usize,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let max = v.last().copied().unwrap_or(0.0);
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    (percentile(&v, 50.0), percentile(&v, 99.0), max, mean)
}

fn config(dir: &Path, vault: &VaultSim, imds: &ImdsSim, i: usize, spec: &Spec) -> String {
    format!(
        r#"[vault]
address = "{vault}"
ca_cert = "{ca}"
request_timeout = "{request_timeout}"

[auth]
role = "web"

[imds]
endpoint = "{imds}"

[state]
dir = "{dir}/state"

[status]
file = "{dir}/status.json"

[retry]
deadline = "{deadline}s"
max_delay = "{max_delay}"

[[secret]]
name = "app"
path = "secret/data/fleet/agent-{i:03}"

  [[secret.file]]
  path = "{dir}/out/app.env"
  format = "env"
  fields = ["password"]
"#,
        vault = vault.url(),
        ca = dir.parent().unwrap().join("vault-ca.pem").display(),
        imds = imds.url(),
        dir = dir.display(),
        deadline = spec.deadline.as_secs(),
        max_delay = spec.max_delay,
        request_timeout = REQUEST_TIMEOUT,
    )
}

/// One variant of the fleet: its load, the agents' retry settings and its bounds.
struct Spec {
    agents: usize,
    /// Logins per second the Vault quota allows (429 + Retry-After beyond).
    rate: u32,
    retry_after: u64,
    /// One injected 5xx after every this many Vault requests.
    fault_every: usize,
    /// EC2's DescribeInstances bucket behind Vault: (burst, refill per second); burst 0: none.
    ec2: (u32, f64),
    /// The agents' retry.max_delay and retry.deadline.
    max_delay: String,
    deadline: Duration,
    /// The last agent must be done within `factor` x ideal + `slack` seconds.
    factor: f64,
    slack: f64,
    /// Vault requests per agent: at most this mean and this 99th percentile (a fleet that
    /// comes back together after each refusal costs many more).
    requests: (f64, f64),
    /// At most this many DescribeInstances calls behind all the logins (`None`: not bounded).
    describe_max: Option<usize>,
}

impl Spec {
    /// The knobs from the environment, over this variant's defaults.
    fn with_knobs(self) -> Spec {
        Spec {
            agents: knob("FLEET_AGENTS", self.agents),
            rate: knob("FLEET_RATE", self.rate),
            retry_after: knob("FLEET_RETRY_AFTER", self.retry_after),
            fault_every: knob("FLEET_5XX_EVERY", self.fault_every),
            ec2: (
                knob("FLEET_EC2_BURST", self.ec2.0),
                knob("FLEET_EC2_REFILL", self.ec2.1),
            ),
            max_delay: knob("FLEET_MAX_DELAY", self.max_delay),
            ..self
        }
    }

    /// The slowest rate any agent's login goes through.
    fn slowest_rate(&self) -> f64 {
        match self.ec2 {
            (0, _) => self.rate as f64,
            (_, refill) => refill.min(self.rate as f64),
        }
    }
}

/// `retry.max_delay` as the agent parses it ("2s", "300ms", "20s").
fn seconds(text: &str) -> f64 {
    if let Some(ms) = text.strip_suffix("ms") {
        ms.parse::<f64>().unwrap() / 1000.0
    } else {
        text.trim_end_matches('s').parse().unwrap()
    }
}

#[test]
#[ignore = "a 300-process, timing-sensitive load test (~15 s): see docs/fleet.md"]
fn fleet_of_300_boots_within_the_rate_limit() {
    run_fleet(
        Spec {
            agents: 300,
            rate: 50,
            retry_after: 1,
            fault_every: 30,
            ec2: (0, 0.0),
            max_delay: "20s".into(),
            deadline: Duration::from_secs(300),
            factor: 1.5,
            slack: 0.0,
            requests: (8.0, 15.0),
            describe_max: None,
        }
        .with_knobs(),
    );
}

#[test]
#[ignore = "a 1000-process scale-out through EC2 throttling (~1 min): see docs/fleet.md"]
fn fleet_of_1000_scaling_out_through_ec2_throttling() {
    run_fleet(
        Spec {
            agents: 1000,
            rate: 50,
            retry_after: 1,
            fault_every: 30,
            ec2: (100, 20.0),
            max_delay: "20s".into(),
            deadline: Duration::from_secs(300),
            factor: 1.3,
            slack: 0.0,
            requests: (8.0, 15.0),
            describe_max: Some(1300),
        }
        .with_knobs(),
    );
}

/// The small variant that CI runs in a stage of its own (~15 s in a debug build): the same
/// mechanisms, a bucket ten times smaller, short back-off caps, a generous time bound.
#[test]
#[ignore = "a 100-process load test (~15 s), CI's fleet stage: see docs/fleet.md"]
fn fleet_of_100_scaling_out_through_ec2_throttling() {
    run_fleet(Spec {
        agents: 100,
        rate: 50,
        retry_after: 1,
        fault_every: 30,
        ec2: (10, 10.0),
        max_delay: "2s".into(),
        deadline: Duration::from_secs(120),
        factor: 2.0,
        slack: 10.0,
        requests: (REQUESTS_100.0, REQUESTS_100.1),
        describe_max: None,
    });
}

/// The 100-agent variant's bounds on Vault requests per agent (mean, p99): measured 6.06 / 10
/// with refusals spread over a growing window and the fleet started at once (the start line;
/// 5.6 / 9 when the machine spread the starts over a second or two), 9.5 / 19 when the spread
/// never grows past 200 ms (docs/fleet.md). Its EC2 calls (about 300 either way) are too close
/// to tell apart at this size: not bounded.
const REQUESTS_100: (f64, f64) = (7.0, 12.0);

fn run_fleet(spec: Spec) {
    let bin: PathBuf = std::env::var_os("FLEET_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_vaultboot")));
    let mut fleet = Fleet::set_up(&spec);
    let trickle = Trickle::start(&fleet.vault, spec.fault_every);
    let mut started = fleet.start_together(&bin);
    fleet.wait(started.t0 + spec.deadline + Duration::from_secs(30));
    if let Some(answering) = started.answering.take() {
        started.answered_within = answering.join().unwrap();
    }
    trickle.stop();
    let seen = fleet.attribute();
    let figures = Figures::of(&fleet, &seen, started.t0, &spec);
    let report = report(&spec, &bin, &started, &seen, &figures);
    println!("{report}");
    if let Some(path) = std::env::var_os("FLEET_REPORT") {
        fs::write(path, &report).unwrap();
    }
    check_every_agent(&fleet, &started, &figures, &spec);
    assert_eq!(
        figures.logins_ok,
        fleet.agents.len(),
        "one successful login per agent"
    );
    assert_eq!(
        seen.unattributed,
        Default::default(),
        "every Vault request belongs to an agent"
    );
    assert!(figures.n5xx > 0, "the 5xx trickle did not hit anything");
    check_no_spinning(&seen.per_agent, &figures.finish, &spec);
    if spec.ec2.0 > 0 {
        assert!(
            figures.describe_throttled > 0,
            "EC2's bucket never throttled: the variant tests nothing"
        );
    }
    check_politeness(&seen.per_agent, &figures, &spec);
    assert!(
        figures.total <= figures.bound,
        "the last agent finished after {:.2} s, more than {} x the ideal {:.2} s + {} s",
        figures.total,
        spec.factor,
        figures.ideal,
        spec.slack
    );
}

/// The simulators and the agents of one run.
struct Fleet {
    root: tempfile::TempDir,
    signer: Signer,
    vault: VaultSim,
    /// One IMDS simulator per agent, in the agents' order.
    imds: Vec<ImdsSim>,
    agents: Vec<Agent>,
}

impl Fleet {
    /// Vault with a secret per agent, an IMDS per agent (a few failing at first), and each
    /// agent's directory with its configuration.
    fn set_up(spec: &Spec) -> Fleet {
        let root = tempfile::tempdir().unwrap();
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let signer = Signer::new();
        let vault = VaultSim::start(VaultOptions::new(&signer)).unwrap();
        let ami = Identity::sample("i-0").image_id;
        vault.add_ec2_role("aws", "web", Some(&ami), &["secret/data/fleet/"]);
        for i in 0..spec.agents {
            let password = serde_json::json!({ "password": password(i) });
            vault.put_kv2("secret", &format!("fleet/agent-{i:03}"), password);
        }
        fs::write(root.path().join("vault-ca.pem"), vault.ca_pem()).unwrap();
        // One IMDS simulator per agent: a distinct identity each (an accept thread each, and
        // a connection thread while the agent runs: a few hundred threads, nothing more).
        let imds: Vec<ImdsSim> = (0..spec.agents)
            .map(|i| ImdsSim::start(Identity::sample(&instance_id(i)), &signer).unwrap())
            .collect();
        // A few percent of the agents find IMDS failing at first (500 on the token, 503 on a
        // read).
        for (i, sim) in imds.iter().enumerate() {
            if i % 33 == 0 {
                sim.control()
                    .inject(Some("PUT"), "/latest/api/token", Fault::status(500, "x"), 1);
            } else if i % 33 == 16 {
                sim.control()
                    .inject(Some("GET"), "/latest/dynamic/", Fault::status(503, "x"), 1);
            }
        }
        let agents = (0..spec.agents)
            .map(|i| Agent::set_up(root.path(), &vault, &imds[i], i, spec))
            .collect();
        vault.set_login_rate_limit(spec.rate, Some(spec.retry_after));
        vault.set_describe_instances_limit(spec.ec2.0, spec.ec2.1);
        vault.control().clear_requests();
        Fleet {
            root,
            signer,
            vault,
            imds,
            agents,
        }
    }

    /// The start: every agent is a shell blocked reading a FIFO, which then execs vaultboot
    /// (closing the FIFO's write end lets them all go); each agent's first login is then held
    /// at the start line until every agent's is there, and all are let go at once. A loaded
    /// machine spreads 1000 exec()s over seconds: the start line makes "the fleet starts at
    /// once" what the test creates, not what the machine happens to give.
    fn start_together(&mut self, bin: &Path) -> Started {
        let line = StartLine::hold_first_logins(&self.vault, self.agents.len());
        let gate = self.root.path().join("gate");
        nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for a in self.agents.iter_mut() {
            a.spawn_behind(&gate, bin);
        }
        let writer = fs::OpenOptions::new().write(true).open(&gate).unwrap();
        // Wait until every shell has the gate open (its stdin), i.e. is blocked in `read`.
        let waiting = |a: &Agent| {
            let pid = a.child.as_ref().unwrap().id();
            fs::read_link(format!("/proc/{pid}/fd/0")).is_ok_and(|p| p == gate)
        };
        let ready_by = Instant::now() + Duration::from_secs(60);
        while !self.agents.iter().all(waiting) {
            assert!(
                Instant::now() < ready_by,
                "the shells did not reach the gate"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let opened = Instant::now();
        drop(writer);
        line.gather_and_release(opened)
    }

    /// Every agent's exit (and when), until `hard_stop`; those still running then are killed.
    fn wait(&mut self, hard_stop: Instant) {
        let pause = Duration::from_millis(if self.agents.len() > 300 { 10 } else { 2 });
        while self.agents.iter().any(|a| a.finished.is_none()) && Instant::now() < hard_stop {
            for a in self.agents.iter_mut().filter(|a| a.finished.is_none()) {
                if let Ok(Some(st)) = a.child.as_mut().unwrap().try_wait() {
                    a.finished = Some(Instant::now());
                    a.status = Some(st.code().unwrap_or(-1));
                }
            }
            // Finish times to 2 ms for a few hundred agents; a thousand polled that often
            // would take a core from them.
            std::thread::sleep(pause);
        }
        for a in self.agents.iter_mut().filter(|a| a.finished.is_none()) {
            let _ = a.child.as_mut().unwrap().kill();
            let _ = a.child.as_mut().unwrap().wait();
        }
    }

    /// Every request the simulators saw, attributed to its agent.
    fn attribute(&self) -> Attributed {
        let requests = self.vault.control().requests();
        let mut per_agent = vec![Seen::default(); self.agents.len()];
        let mut unattributed = std::collections::BTreeMap::new();
        let mut owner = Owners::new(self, &requests);
        for r in &requests {
            let Some(i) = owner.of(r) else {
                let kind = format!("{} {} {}", r.method, r.path_only(), r.status);
                *unattributed.entry(kind).or_insert(0usize) += 1;
                continue;
            };
            per_agent[i].vault += 1;
            if r.path_only() == LOGIN {
                per_agent[i].logins.push((r.at, r.status));
            } else {
                if r.path_only() == REVOKE && r.status == 204 {
                    per_agent[i].revoked += 1;
                }
                per_agent[i].other.push((r.at, r.status));
            }
        }
        // When each agent started: its first IMDS request (the session token).
        let mut first_request = Vec::new();
        for (i, sim) in self.imds.iter().enumerate() {
            let reqs = sim.control().requests();
            per_agent[i].imds = reqs.len();
            first_request.extend(reqs.iter().map(|r| r.at).min());
        }
        let n = self.agents.len();
        assert_eq!(first_request.len(), n, "an agent never reached IMDS");
        Attributed {
            earliest: *first_request.iter().min().unwrap(),
            latest: *first_request.iter().max().unwrap(),
            requests,
            per_agent,
            unattributed,
        }
    }
}

/// How the fleet started: when the FIFO opened, how the first logins reached the start line
/// and when they were let go together (`t0`: every time of the run counts from it).
struct Started {
    opened: Instant,
    t0: Instant,
    /// First logins at the start line when it was released (all of them, unless GATHER
    /// passed first).
    held: usize,
    /// The first and the last first login held, since the FIFO opened: the machine's spread.
    first_held: Duration,
    last_held: Duration,
    /// How long after the release the last held login had been answered (timed on a thread
    /// of its own while the test times the agents' exits).
    answered_within: Duration,
    answering: Option<std::thread::JoinHandle<Duration>>,
}

/// The start line: each agent's first login is held at Vault (read whole, not yet handled:
/// neither the quota nor EC2 has seen it) until every agent's is there. An agent sends one
/// login at a time, so the first N logins are N agents' first ones.
struct StartLine {
    gates: Vec<Gate>,
}

impl StartLine {
    fn hold_first_logins(vault: &VaultSim, agents: usize) -> StartLine {
        let gates: Vec<Gate> = (0..agents).map(|_| Gate::new()).collect();
        for g in &gates {
            let hold = Fault::Hold(g.clone());
            vault.control().inject(Some("POST"), LOGIN, hold, 1);
        }
        StartLine { gates }
    }

    /// Waits until every first login is held (or GATHER has passed since `opened`), lets them
    /// all go, and times their answers.
    fn gather_and_release(&self, opened: Instant) -> Started {
        let mut held_at: Vec<Option<Instant>> = vec![None; self.gates.len()];
        while held_at.iter().any(Option::is_none) && opened.elapsed() < GATHER {
            let now = Instant::now();
            for (gate, at) in self.gates.iter().zip(held_at.iter_mut()) {
                if at.is_none() && gate.is_held() {
                    *at = Some(now);
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let t0 = Instant::now();
        for gate in &self.gates {
            gate.release();
        }
        let held: Vec<Instant> = held_at.into_iter().flatten().collect();
        let since = |at: Option<&Instant>| at.map_or(Duration::ZERO, |at| *at - opened);
        Started {
            opened,
            t0,
            held: held.len(),
            first_held: since(held.iter().min()),
            last_held: since(held.iter().max()),
            answered_within: Duration::ZERO,
            answering: Some(self.answered(t0)),
        }
    }

    /// How long after `t0` the last held login had its answer written.
    fn answered(&self, t0: Instant) -> std::thread::JoinHandle<Duration> {
        let gates = self.gates.clone();
        std::thread::spawn(move || {
            let mut last = t0;
            for gate in &gates {
                if gate.wait_done(Duration::from_secs(30)) {
                    last = last.max(Instant::now());
                }
            }
            last - t0
        })
    }
}

impl Agent {
    fn set_up(root: &Path, vault: &VaultSim, imds: &ImdsSim, i: usize, spec: &Spec) -> Agent {
        let dir = root.join(format!("agent-{i:03}"));
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("config.toml"), config(&dir, vault, imds, i, spec)).unwrap();
        Agent {
            dir,
            child: None,
            finished: None,
            status: None,
        }
    }

    /// A shell that execs the agent once `gate` can be read.
    fn spawn_behind(&mut self, gate: &Path, bin: &Path) {
        let log = fs::File::create(self.dir.join("agent.log")).unwrap();
        self.child = Some(
            Command::new("sh")
                .arg("-c")
                .arg(r#"read _ < "$0"; exec "$1" run --config "$2""#)
                .arg(gate)
                .arg(bin)
                .arg(self.dir.join("config.toml"))
                .env("VAULTBOOT_SYSLOG_SOCKET", self.dir.join("no-syslog.sock"))
                .env_remove("JOURNAL_STREAM")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .expect("spawn sh"),
        );
    }
}

/// The 5xx trickle: after every `fault_every` Vault requests, the next one (any path) gets a
/// 5xx without Retry-After. Spread over the whole boot, a fixed share of the traffic (and
/// never a pile of faults waiting for the last, lonely agent).
struct Trickle {
    running: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Trickle {
    fn start(vault: &VaultSim, fault_every: usize) -> Trickle {
        let running = Arc::new(AtomicBool::new(true));
        let control = vault.control().clone();
        let still = running.clone();
        let thread = std::thread::spawn(move || {
            let codes = [500u16, 502, 503, 504];
            let mut next = fault_every;
            let mut n = 0usize;
            while still.load(Ordering::SeqCst) {
                let seen = control.wait_for_requests(next, Duration::from_millis(20));
                if seen >= next {
                    let code = codes[n % codes.len()];
                    let fault = Fault::status(code, "injected by the fleet test");
                    control.inject(None, "/v1/", fault, 1);
                    n += 1;
                    next = seen + fault_every;
                }
            }
            control.clear_faults();
        });
        Trickle { running, thread }
    }

    fn stop(self) {
        self.running.store(false, Ordering::SeqCst);
        self.thread.join().unwrap();
    }
}

/// Which agent sent a Vault request. Logins carry the signed document (its instance id);
/// secret reads name the agent in the path and carry its token; revoke-self carries the token.
struct Owners<'a> {
    signer: &'a Signer,
    index_of: HashMap<String, usize>,
    token_owner: HashMap<String, usize>,
    /// An agent sends the same document with every attempt: each is verified once.
    verified: HashMap<String, Option<usize>>,
}

impl<'a> Owners<'a> {
    fn new(fleet: &'a Fleet, requests: &[RecordedRequest]) -> Owners<'a> {
        let mut token_owner = HashMap::new();
        for r in requests {
            if let Some(rest) = r.path_only().strip_prefix(SECRET_PREFIX) {
                if let (Some(i), Some(t)) = (
                    rest.strip_prefix("agent-").and_then(|n| n.parse().ok()),
                    r.header("x-vault-token"),
                ) {
                    token_owner.insert(t.to_string(), i);
                }
            }
        }
        Owners {
            signer: &fleet.signer,
            index_of: (0..fleet.agents.len())
                .map(|i| (instance_id(i), i))
                .collect(),
            token_owner,
            verified: HashMap::new(),
        }
    }

    fn of(&mut self, r: &RecordedRequest) -> Option<usize> {
        if r.path_only() != LOGIN {
            let token = r.header("x-vault-token")?;
            return self.token_owner.get(token).copied();
        }
        let blob = r.json()?.get("pkcs7")?.as_str()?.to_string();
        let (signer, index_of) = (self.signer, &self.index_of);
        *self.verified.entry(blob).or_insert_with_key(|blob| {
            let (_, doc) = signer.verify(blob).ok()?;
            let doc: serde_json::Value = serde_json::from_str(&doc).ok()?;
            index_of.get(doc["instanceId"].as_str()?).copied()
        })
    }
}

/// What the simulators saw, per agent.
struct Attributed {
    requests: Vec<RecordedRequest>,
    per_agent: Vec<Seen>,
    /// Requests no agent could be found for, by method, path and status.
    unattributed: std::collections::BTreeMap<String, usize>,
    /// The first and the last agent's first IMDS request.
    earliest: Instant,
    latest: Instant,
}

/// The run in numbers.
struct Figures {
    /// Each agent's finish, in seconds since the gate opened (infinity: never).
    finish: Vec<f64>,
    total: f64,
    ideal: f64,
    bound: f64,
    n429: usize,
    n5xx: usize,
    /// Logins answered 400: EC2 throttling behind Vault (nothing else answers 400 here).
    n_throttled: usize,
    logins_total: usize,
    logins_ok: usize,
    describe_calls: usize,
    describe_throttled: usize,
}

impl Figures {
    fn of(fleet: &Fleet, seen: &Attributed, t0: Instant, spec: &Spec) -> Figures {
        let finish: Vec<f64> = fleet
            .agents
            .iter()
            .map(|a| a.finished.map(|f| secs(f - t0)).unwrap_or(f64::INFINITY))
            .collect();
        let total = finish.iter().cloned().fold(0.0, f64::max);
        let ideal = fleet.agents.len() as f64 / spec.slowest_rate();
        let count = |keep: &dyn Fn(&RecordedRequest) -> bool| {
            seen.requests.iter().filter(|r| keep(r)).count()
        };
        let login = |r: &RecordedRequest| r.path_only() == LOGIN;
        let (describe_calls, describe_throttled, _, _) = fleet.vault.aws_calls();
        Figures {
            total,
            ideal,
            bound: spec.factor * ideal + spec.slack,
            n429: count(&|r| r.status == 429),
            n5xx: count(&|r| (500..600).contains(&r.status)),
            n_throttled: count(&|r| login(r) && r.status == 400),
            logins_total: count(&login),
            logins_ok: count(&|r| login(r) && r.status == 200),
            describe_calls: describe_calls as usize,
            describe_throttled: describe_throttled as usize,
            finish,
        }
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Seconds from `t0` to `at`, negative when before it.
fn signed_secs(at: Instant, t0: Instant) -> f64 {
    secs(at.saturating_duration_since(t0)) - secs(t0.saturating_duration_since(at))
}

/// Login attempts (and successes) per 500 ms (wider for a long run): where the capacity went.
fn histogram(requests: &[RecordedRequest], t0: Instant, total: f64) -> String {
    let width = if total > 20.0 {
        (total / 40.0).ceil()
    } else {
        0.5
    };
    let buckets = (total / width).ceil() as usize + 1;
    let mut attempts = vec![0usize; buckets];
    let mut successes = vec![0usize; buckets];
    for r in requests.iter().filter(|r| r.path_only() == LOGIN) {
        let b = ((secs(r.at.saturating_duration_since(t0))) / width) as usize;
        if b < buckets {
            attempts[b] += 1;
            if r.status == 200 {
                successes[b] += 1;
            }
        }
    }
    let mut out = String::new();
    for b in 0..buckets {
        out.push_str(&format!(
            "| {:>5.1} | {:>4} | {:>4} |\n",
            b as f64 * width,
            attempts[b],
            successes[b]
        ));
    }
    out
}

/// The slowest agents' requests, for the profile of the tail: time since the gate, status.
fn slowest(per_agent: &[Seen], finish: &[f64], t0: Instant) -> String {
    let mut order: Vec<usize> = (0..per_agent.len()).collect();
    order.sort_by(|a, b| finish[*b].partial_cmp(&finish[*a]).unwrap());
    let mut out = String::new();
    for &i in order.iter().take(5) {
        let s = &per_agent[i];
        let mut reqs: Vec<(Instant, u16, &str)> = s
            .logins
            .iter()
            .map(|(at, st)| (*at, *st, "login"))
            .chain(s.other.iter().map(|(at, st)| (*at, *st, "other")))
            .collect();
        reqs.sort();
        let line: Vec<String> = reqs
            .iter()
            .map(|(at, st, what)| format!("{:.2} {what} {st}", signed_secs(*at, t0)))
            .collect();
        out.push_str(&format!(
            "- agent {i:03} done {:.2} s: {}\n",
            finish[i],
            line.join(", ")
        ));
    }
    out
}

/// The run's report (docs/fleet.md shows one).
fn report(spec: &Spec, bin: &Path, started: &Started, seen: &Attributed, f: &Figures) -> String {
    let Spec {
        agents: agents_n,
        rate,
        retry_after,
        fault_every,
        ref max_delay,
        ..
    } = *spec;
    let (t0, requests) = (started.t0, &seen.requests);
    let fin = stats(f.finish.clone());
    format!(
        "agents {agents_n}, login rate limit {rate}/s (429 + Retry-After: {retry_after}), \
         a 5xx after every {fault_every} Vault requests, EC2 DescribeInstances bucket {}, \
         agent retry.max_delay {max_delay}, binary {}\n\
         first IMDS requests {:.3} s to {:.3} s after the FIFO opened; first logins held at the \
         start line: {} of {agents_n}, the first {:.3} s and the last {:.3} s after the FIFO \
         opened; released together (t = 0), all answered within {:.3} s\n\
         Vault requests: {} ({} logins, {} login successes, {} x 429, {} x 5xx = {:.1}%, \
         {} x 400 EC2 throttling behind Vault), unattributed {:?}\n\
         EC2 DescribeInstances calls behind the logins: {}, of which throttled {}\n\
         requests per agent (p50 / p99 / max / mean):\n{}\
         finish time since the release (p50 / p99 / max / mean): \
         {:.2} s / {:.2} s / {:.2} s / {:.2} s\n\
         last agent done after {:.2} s; ideal {:.2} s ({agents_n} logins at {}/s); \
         ratio {:.2} (bound {:.2} s)\n\
         slowest agents (s since the release, request, status; a first login held at the \
         start line shows when its head came, before the release):\n{}\
         \n| t (s) | login attempts | successes |\n|---|---|---|\n{}",
        match spec.ec2 {
            (0, _) => "none".to_string(),
            (burst, refill) => format!("{burst} + {refill}/s"),
        },
        bin.display(),
        secs(seen.earliest - started.opened),
        secs(seen.latest - started.opened),
        started.held,
        secs(started.first_held),
        secs(started.last_held),
        secs(started.answered_within),
        requests.len(),
        f.logins_total,
        f.logins_ok,
        f.n429,
        f.n5xx,
        100.0 * f.n5xx as f64 / requests.len().max(1) as f64,
        f.n_throttled,
        seen.unattributed,
        f.describe_calls,
        f.describe_throttled,
        per_agent_lines(&seen.per_agent),
        fin.0,
        fin.1,
        fin.2,
        fin.3,
        f.total,
        f.ideal,
        spec.slowest_rate(),
        f.total / f.ideal,
        f.bound,
        slowest(&seen.per_agent, &f.finish, t0),
        histogram(requests, t0, f.total),
    )
}

/// How many requests of one kind an agent sent.
type Count = dyn Fn(&Seen) -> usize;

/// Requests per agent, one line per kind: p50 / p99 / max / mean.
fn per_agent_lines(per_agent: &[Seen]) -> String {
    let rows: [(&str, &Count); 5] = [
        ("Vault, all:   ", &|s| s.vault),
        ("Vault logins: ", &|s| s.logins.len()),
        ("of which EC2-throttled: ", &|s| {
            s.logins.iter().filter(|(_, st)| *st == 400).count()
        }),
        ("IMDS:         ", &|s| s.imds),
        ("together:     ", &|s| s.vault + s.imds),
    ];
    let mut out = String::new();
    for (label, count) in rows {
        let (p50, p99, max, mean) = stats(per_agent.iter().map(|s| count(s) as f64).collect());
        out.push_str(&format!(
            "- {label}{p50:.0} / {p99:.0} / {max:.0} / {mean:.2}\n"
        ));
    }
    out
}

/// The fleet's cost to Vault and to EC2 behind it: Vault requests per agent (mean, p99) and
/// DescribeInstances calls in all, within the variant's bounds.
fn check_politeness(per_agent: &[Seen], figures: &Figures, spec: &Spec) {
    let (_, p99, _, mean) = stats(per_agent.iter().map(|s| s.vault as f64).collect());
    let (max_mean, max_p99) = spec.requests;
    assert!(
        mean <= max_mean && p99 <= max_p99,
        "Vault requests per agent: mean {mean:.2} (at most {max_mean}), p99 {p99} (at most \
         {max_p99})"
    );
    if let Some(max) = spec.describe_max {
        assert!(
            figures.describe_calls <= max,
            "{} DescribeInstances calls behind {} logins (at most {max})",
            figures.describe_calls,
            per_agent.len()
        );
    }
}

/// Every agent's first login was at the start line when it was released (the fleet started at
/// once), and every agent exited 0 before its deadline and wrote its secret.
fn check_every_agent(fleet: &Fleet, started: &Started, figures: &Figures, spec: &Spec) {
    assert_eq!(
        started.held,
        fleet.agents.len(),
        "only {} first logins reached the start line within {GATHER:?} of the FIFO opening: \
         the machine is too loaded to start the fleet; see docs/fleet.md",
        started.held
    );
    for (i, a) in fleet.agents.iter().enumerate() {
        let log = fs::read_to_string(a.dir.join("agent.log")).unwrap_or_default();
        assert_eq!(a.status, Some(0), "agent {i} failed:\n{log}");
        let written = fs::read_to_string(a.dir.join("out/app.env")).unwrap();
        let expected = env_escaped(&password(i));
        assert_eq!(written, format!("password=\"{expected}\"\n"), "agent {i}");
        assert!(figures.finish[i] < secs(spec.deadline));
    }
}

/// `text` as format = "env" writes it between double quotes.
fn env_escaped(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if matches!(c, '\\' | '"' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// No spinning. Per agent: after a 429 the next login waits at least Retry-After (the
/// simulator records when it read each request; 50 ms for the round trip), every failed
/// attempt is followed by at most one retry, and the attempts fit the time the agent ran:
/// - 429s at one per Retry-After;
/// - blind failures (EC2 throttling, 5xx: no Retry-After) within what the growing back-off
///   allows. The pause after the k-th is uniform in [0, min(200 ms x 2^k, max_delay)]: the
///   cap reaches max_delay after `ramp` of them, and from then on each pause averages
///   max_delay / 2. An agent that ran T s can have had `ramp` + 3 T / (max_delay / 2) + 5
///   of them only if its pauses summed to less than a third of their expectation: for
///   T = 60 s and max_delay 20 s that is 22 uniform draws summing below 60 s, about 6 sd
///   under their mean 220 s (the 429s' pauses and the ramp only make it less likely).
fn check_no_spinning(per_agent: &[Seen], finish: &[f64], spec: &Spec) {
    let retry_after = spec.retry_after;
    let floor = Duration::from_secs(retry_after).saturating_sub(Duration::from_millis(50));
    let max_delay_s = seconds(&spec.max_delay);
    let ramp = (max_delay_s / 0.2).log2().ceil().max(0.0) + 1.0;
    for (i, s) in per_agent.iter().enumerate() {
        for pair in s.logins.windows(2) {
            let ((at, status), (next, _)) = (pair[0], pair[1]);
            assert_ne!(status, 200, "agent {i} logged in twice");
            if status == 429 {
                assert!(
                    next - at >= floor,
                    "agent {i} retried a 429 after {:?}",
                    next - at
                );
            }
        }
        let failed5xx = s
            .logins
            .iter()
            .chain(&s.other)
            .filter(|(_, st)| (500..600).contains(st))
            .count();
        let limited = s.logins.iter().filter(|(_, st)| *st == 429).count();
        let ran = finish[i];
        assert!(
            limited as f64 <= ran / retry_after as f64 + 1.0,
            "agent {i}: {limited} x 429 in {ran:.1} s"
        );
        let throttled = s.logins.iter().filter(|(_, st)| *st == 400).count();
        let blind = throttled + failed5xx;
        let allowed = ramp + 3.0 * ran / (max_delay_s / 2.0) + 5.0;
        assert!(
            blind as f64 <= allowed,
            "agent {i}: {blind} blind failures in {ran:.1} s (allowed {allowed:.0})"
        );
        // Success path: 1 login + 1 read + 1 revoke; each failure adds at most one attempt.
        assert!(
            s.vault <= 3 + limited + blind,
            "agent {i}: {} Vault requests for {limited} x 429, {throttled} x 400 and \
             {failed5xx} x 5xx",
            s.vault
        );
        assert_eq!(s.revoked, 1, "agent {i}: its token revoked once");
        // IMDS: token, document, signed document (+ one retry when a fault was injected).
        assert!(s.imds <= 4, "agent {i}: {} IMDS requests", s.imds);
    }
}
