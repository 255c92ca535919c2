//! `vaultboot-bench`: the boot job of vaultboot against the curl + jq recipe, on the project's
//! IMDSv2 and Vault simulators (loopback, real TLS), with injected latency. BENCHMARK ONLY.
//!
//! Both programs fetch the same secrets (KV v2 AD join credentials, KV v2 API key, a PKI
//! certificate whose request uses the local-hostname and local-ipv4 templates) and write the same
//! four files. They run alternately (A B A B …), each run a first boot: fresh state and output
//! directories, the instance's identity access-list entry deleted beforehand. For every run:
//!
//! * time to files: process start (just before spawn) until the program says `files in place`
//!   on stderr (vaultboot logs it after the renames and the directory fsyncs; the recipe echoes
//!   it after its last `jq >file`), timestamped when the line arrives;
//! * total wall time: process start until wait4() returns;
//! * CPU time (user + system) from wait4()'s rusage; for the recipe it includes its children
//!   (curl, jq, …);
//! * peak RSS from `/usr/bin/time` (separate runs made for it: a child spawned directly from this
//!   large process would inherit its memory high-water mark at exec); for the recipe, the
//!   largest single process;
//! * how long the main thread waited for a CPU (/proc/PID/schedstat): how busy the machine was;
//! * HTTP requests, TCP connections and TLS handshakes (full, resumed) as the simulators saw them.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use vaultboot_sim::{DemoWorld, ImdsSim, RecordedRequest, VaultSim, DEMO_INSTANCE};

const INSTANCE: &str = DEMO_INSTANCE;
const MARKER: &str = "files in place";
/// GNU time (`apt-get install time`): measures the peak RSS.
const TIME: &str = "/usr/bin/time";
/// Runs of each program made under `/usr/bin/time` for the peak RSS, after the timed runs.
const RSS_RUNS: usize = 10;
/// A run whose main thread waited less than this for a CPU was hardly slowed by other work.
const CALM_MS: f64 = 2.0;
const USAGE: &str = "\
usage: vaultboot-bench --agent PATH --recipe PATH [--runs N] [--latency-imds MS]
                       [--latency-vault MS] [--work DIR] [--csv FILE] [--timeline]
                       [--recipe-size BYTES] [--wrap 'PROFILER ARGS'] [--baseline PATH]
                       [--outliers]

Runs the agent (`PATH run --config …`) and the recipe (bash PATH, configured through its
environment) alternately N times each (default 30), after one discarded warm-up run of each,
then up to 10 more of each under /usr/bin/time for the peak RSS.
Latency (default IMDS 1 ms, Vault 20 ms) is added to every answer and to every new TCP
connection (before the TLS handshake). Prints medians, the ratio, the lower bound, and whether
each target is met; --timeline also prints what the simulators saw in the median runs.
--wrap runs the agent under a profiler (strace, perf record): for profiles, not for figures.
--baseline PATH runs another vaultboot binary too (A B C A B C ...): a before/after.
--outliers prints the timeline of every vaultboot run slower than twice the median, or that
opened more Vault connections than the median run.
";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Agent,
    Recipe,
    /// Another vaultboot binary (an earlier build), for a before/after in the same run.
    Baseline,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Agent => "vaultboot",
            Kind::Recipe => "curl-recipe",
            Kind::Baseline => "baseline",
        }
    }
}

struct Opts {
    agent: PathBuf,
    recipe: PathBuf,
    runs: usize,
    latency_imds: u64,
    latency_vault: u64,
    work: Option<PathBuf>,
    csv: Option<PathBuf>,
    timeline: bool,
    recipe_size: Option<u64>,
    /// A profiler to run the agent under (e.g. "strace -f -tt -o /tmp/trace"): profiling only.
    wrap: Vec<String>,
    baseline: Option<PathBuf>,
    outliers: bool,
}

fn parse_args() -> Result<Opts, String> {
    let mut args = std::env::args().skip(1);
    let mut o = Opts {
        agent: PathBuf::new(),
        recipe: PathBuf::new(),
        runs: 30,
        latency_imds: 1,
        latency_vault: 20,
        work: None,
        csv: None,
        timeline: false,
        recipe_size: None,
        wrap: Vec::new(),
        baseline: None,
        outliers: false,
    };
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--agent" => o.agent = value("--agent")?.into(),
            "--recipe" => o.recipe = value("--recipe")?.into(),
            "--runs" => {
                o.runs = value("--runs")?
                    .parse()
                    .map_err(|e| format!("--runs: {e}"))?
            }
            "--latency-imds" => {
                o.latency_imds = value("--latency-imds")?
                    .parse()
                    .map_err(|e| format!("--latency-imds: {e}"))?
            }
            "--latency-vault" => {
                o.latency_vault = value("--latency-vault")?
                    .parse()
                    .map_err(|e| format!("--latency-vault: {e}"))?
            }
            "--work" => o.work = Some(value("--work")?.into()),
            "--csv" => o.csv = Some(value("--csv")?.into()),
            "--recipe-size" => {
                o.recipe_size = Some(
                    value("--recipe-size")?
                        .parse()
                        .map_err(|e| format!("--recipe-size: {e}"))?,
                )
            }
            "--timeline" => o.timeline = true,
            "--outliers" => o.outliers = true,
            "--baseline" => o.baseline = Some(value("--baseline")?.into()),
            "--wrap" => {
                o.wrap = value("--wrap")?
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if o.agent.as_os_str().is_empty() || o.recipe.as_os_str().is_empty() {
        return Err("--agent and --recipe are required".into());
    }
    if o.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    Ok(o)
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("vaultboot-bench: {e}\n\n{USAGE}");
            std::process::exit(64);
        }
    };
    match bench(&opts) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("vaultboot-bench: {e}");
            std::process::exit(2);
        }
    }
}

/// One run of one program.
struct Run {
    kind: Kind,
    /// Milliseconds from spawn to the "files in place" line.
    ttf: f64,
    /// Milliseconds from spawn to exit.
    total: f64,
    cpu_ms: f64,
    /// Peak RSS as `/usr/bin/time` reports it (runs made for it only, see `rss`).
    maxrss_kib: Option<i64>,
    /// Made under `/usr/bin/time` to measure the peak RSS (not used for the timings).
    rss_probe: bool,
    vault_requests: usize,
    vault_connections: u64,
    tls_full: u64,
    tls_resumed: u64,
    imds_requests: usize,
    imds_connections: u64,
    /// (ms since spawn, what) — requests as the simulators saw them, and the program's stderr.
    timeline: Vec<(f64, String)>,
    /// vaultboot only: where its time to files went (see `Phases`).
    phases: Option<Phases>,
    /// How long the main thread waited on the run queue (the CPUs busy with other work), ms.
    runqueue_ms: Option<f64>,
}

/// vaultboot's time to files cut at what the simulators and its log show, in ms. What the
/// injected latency explains is taken out: `ttf = 3 x Vault latency + the sum of these`.
#[derive(Clone, Copy, Default)]
struct Phases {
    /// Spawn until the first log line: exec, hardening, configuration.
    start: f64,
    /// That line until the login reaches Vault, less one connection latency: the connection
    /// set-up not hidden by the latency (resolving, TCP, the full TLS handshake on both sides).
    to_login: f64,
    /// The login's arrival until the first secret read's, less one answer latency: Vault's login
    /// work, reading the answer, starting the reads.
    login_to_reads: f64,
    /// First to last secret read's arrival: how far apart the parallel reads start.
    reads_spread: f64,
    /// The last read's arrival until "secret(s) fetched", less one answer latency: Vault's work
    /// (the PKI issue) and reading the answers.
    reads_to_fetched: f64,
    /// "secret(s) fetched" until "files in place": staging, fsyncs, renames, directory syncs.
    files: f64,
}

type Part = (&'static str, fn(&Phases) -> f64);

const PHASES: [Part; 6] = [
    ("process start to first log line", |p| p.start),
    ("  then to login at Vault, less 1 latency", |p| p.to_login),
    ("  login to first read, less 1 latency", |p| {
        p.login_to_reads
    }),
    ("  first to last parallel read", |p| p.reads_spread),
    ("  last read to fetched, less 1 latency", |p| {
        p.reads_to_fetched
    }),
    ("  fetched to files in place", |p| p.files),
];

fn phases(ttf: f64, lines: &[(f64, &str)], vault: &[(f64, &str)], latency: f64) -> Option<Phases> {
    let line = |needle: &str| lines.iter().find(|(_, l)| l.contains(needle)).map(|x| x.0);
    let start = line("start:")?;
    let fetched = line("secret(s) fetched")?;
    let login = vault.iter().find(|(_, p)| p.ends_with("/login"))?.0;
    let reads: Vec<f64> = vault
        .iter()
        .filter(|(t, p)| *t > login && !p.ends_with("/login") && !p.ends_with("/revoke-self"))
        .map(|x| x.0)
        .collect();
    let first = reads.iter().copied().reduce(f64::min)?;
    let last = reads.iter().copied().reduce(f64::max)?;
    Some(Phases {
        start,
        to_login: login - start - latency,
        login_to_reads: first - login - latency,
        reads_spread: last - first,
        reads_to_fetched: fetched - last - latency,
        files: ttf - fetched,
    })
}

struct Sims {
    imds: ImdsSim,
    vault: VaultSim,
}

struct Env {
    work: PathBuf,
    ca: PathBuf,
    syslog: PathBuf,
    sims: Sims,
}

fn bench(o: &Opts) -> Result<bool, String> {
    let agent = fs::canonicalize(&o.agent).map_err(|e| format!("{}: {e}", o.agent.display()))?;
    let recipe = fs::canonicalize(&o.recipe).map_err(|e| format!("{}: {e}", o.recipe.display()))?;
    let baseline = match &o.baseline {
        Some(b) => Some(fs::canonicalize(b).map_err(|e| format!("{}: {e}", b.display()))?),
        None => None,
    };
    let mut kinds = vec![
        (Kind::Agent, agent.as_path()),
        (Kind::Recipe, recipe.as_path()),
    ];
    if let Some(b) = &baseline {
        kinds.push((Kind::Baseline, b.as_path()));
    }
    let work = match &o.work {
        Some(w) => w.clone(),
        None => std::env::temp_dir().join(format!("vaultboot-bench-{}", std::process::id())),
    };
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    fs::set_permissions(&work, fs::Permissions::from_mode(0o700)).map_err(|e| e.to_string())?;
    let work = fs::canonicalize(&work).map_err(|e| e.to_string())?;

    let ms = Duration::from_millis;
    let world = DemoWorld::builder()
        .instance_id(INSTANCE)
        .imds_latency(ms(o.latency_imds), ms(o.latency_imds))
        .vault_latency(ms(o.latency_vault), ms(o.latency_vault))
        .api_key(BENCH_API_KEY)
        .build()
        .map_err(|e| e.to_string())?;
    let ca = world.write_vault_ca(&work).map_err(|e| e.to_string())?;
    let DemoWorld { imds, vault, .. } = world;

    // A syslog socket that takes every line at once, as journald would.
    let syslog = work.join("syslog.sock");
    let sock = UnixDatagram::bind(&syslog).map_err(|e| format!("syslog socket: {e}"))?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while sock.recv(&mut buf).is_ok() {}
    });

    let env = Env {
        work: work.clone(),
        ca,
        syslog,
        sims: Sims { imds, vault },
    };

    let load_before = loadavg();
    let started = SystemTime::now();
    eprintln!(
        "vaultboot-bench: {} warm-up run(s), then {} runs of each, alternating; work dir {}",
        2,
        o.runs,
        work.display()
    );
    // Warm-up: page cache, the simulators' threads, the CPU frequency.
    for &(kind, program) in &kinds {
        run_once(
            &env,
            program,
            kind,
            0,
            &o.wrap,
            o.latency_vault as f64,
            false,
        )?;
    }
    let mut runs: Vec<Run> = Vec::new();
    for i in 1..=o.runs {
        for &(kind, program) in &kinds {
            runs.push(run_once(
                &env,
                program,
                kind,
                i,
                &o.wrap,
                o.latency_vault as f64,
                false,
            )?);
        }
        if i % 10 == 0 {
            eprintln!("vaultboot-bench: {i}/{} pairs", o.runs);
        }
    }
    for i in 1..=o.runs.min(RSS_RUNS) {
        for &(kind, program) in &kinds {
            runs.push(run_once(
                &env,
                program,
                kind,
                o.runs + i,
                &[],
                o.latency_vault as f64,
                true,
            )?);
        }
    }
    let load_after = loadavg();
    let took = started.elapsed().unwrap_or_default();

    if let Some(csv) = &o.csv {
        write_csv(csv, &runs).map_err(|e| format!("{}: {e}", csv.display()))?;
    }

    let timed = |k: Kind| -> Vec<&Run> {
        runs.iter()
            .filter(|r| r.kind == k && !r.rss_probe)
            .collect()
    };
    let probed = |k: Kind| -> Vec<i64> {
        runs.iter()
            .filter(|r| r.kind == k)
            .filter_map(|r| r.maxrss_kib)
            .collect()
    };
    let (a, b) = (timed(Kind::Agent), timed(Kind::Recipe));
    let rss = (probed(Kind::Agent), probed(Kind::Recipe));
    let agent_size = fs::metadata(&agent).map(|m| m.len()).unwrap_or(0);
    let ok = report(o, &a, &b, &rss, agent_size, &load_before, &load_after, took);
    let c = timed(Kind::Baseline);
    if let Some(path) = &baseline {
        report_baseline(path, &c, &a, (&probed(Kind::Baseline), &rss.0));
    }
    if o.timeline {
        for set in [&a, &b, &c].into_iter().filter(|s| !s.is_empty()) {
            let med = median_run(set);
            println!(
                "\ntimeline of the median {} run (ms since spawn; simulators' view and stderr):",
                med.kind.name()
            );
            for (t, what) in &med.timeline {
                println!("  {t:8.1}  {what}");
            }
        }
    }
    if o.outliers {
        let ttf = median(&col(&a, |r| r.ttf));
        let conns = median(&col(&a, |r| r.vault_connections as f64));
        for r in a
            .iter()
            .filter(|r| r.ttf > 2.0 * ttf || r.vault_connections as f64 > conns)
        {
            println!(
                "\noutlier: time to files {:.1} ms, {} Vault connections ({} full, {} resumed):",
                r.ttf, r.vault_connections, r.tls_full, r.tls_resumed
            );
            for (t, what) in &r.timeline {
                println!("  {t:8.1}  {what}");
            }
        }
    }
    let _ = fs::remove_dir_all(&work);
    Ok(ok)
}

fn run_once(
    env: &Env,
    program: &Path,
    kind: Kind,
    index: usize,
    wrap: &[String],
    latency_vault: f64,
    rss: bool,
) -> Result<Run, String> {
    let dir = env.work.join(format!("{}-{index}", kind.name()));
    let _ = fs::remove_dir_all(&dir);
    let state = dir.join("state");
    let out = dir.join("out");
    for d in [&dir, &out, &out.join("tls")] {
        fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    }
    let files = Outputs {
        ad: out.join("ad-join.env"),
        api: out.join("api-key"),
        cert: out.join("tls/server.crt"),
        key: out.join("tls/server.key"),
    };
    // Every run is a first boot: no nonce bound to this instance yet.
    env.sims.vault.delete_access_list_entry("aws", INSTANCE);

    let path = |p: &Path| p.as_os_str().to_os_string();
    let os = |v: &str| std::ffi::OsString::from(v);
    let mut envs = vec![("PATH", os("/usr/sbin:/usr/bin:/sbin:/bin"))];
    let argv = match kind {
        Kind::Agent | Kind::Baseline => {
            let config = dir.join("config.toml");
            fs::write(&config, agent_config(env, &state, &files)).map_err(|e| e.to_string())?;
            envs.push(("VAULTBOOT_SYSLOG_SOCKET", path(&env.syslog)));
            vec![path(program), os("run"), os("--config"), path(&config)]
        }
        Kind::Recipe => {
            envs.extend([
                ("HOME", path(&dir)),
                ("IMDS", os(&env.sims.imds.url())),
                ("VAULT_ADDR", os(&env.sims.vault.url())),
                ("VAULT_CACERT", path(&env.ca)),
                ("ROLE", os("web")),
                ("NONCE_FILE", path(&state.join("nonce"))),
                ("AD_ENV", path(&files.ad)),
                ("API_KEY_FILE", path(&files.api)),
                ("TLS_CERT", path(&files.cert)),
                ("TLS_KEY", path(&files.key)),
            ]);
            vec![os("/bin/bash"), path(program)]
        }
    };
    // The peak RSS is not taken from our own wait4(): a child spawned from this (large)
    // process inherits its memory high-water mark at exec. /usr/bin/time forks from itself.
    let rss_file = dir.join("maxrss");
    let prefix: Vec<std::ffi::OsString> = if rss {
        vec![os(TIME), os("-f"), os("%M"), os("-o"), path(&rss_file)]
    } else if kind == Kind::Agent {
        wrap.iter().map(|w| os(w)).collect()
    } else {
        Vec::new()
    };
    let full: Vec<std::ffi::OsString> = prefix.into_iter().chain(argv).collect();
    let mut cmd = Command::new(&full[0]);
    cmd.args(&full[1..]).env_clear().envs(envs);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());

    let vc = env.sims.vault.control();
    let ic = env.sims.imds.control();
    let (v_req0, v_conn0, (full0, res0)) =
        (vc.requests().len(), vc.connections(), vc.tls_handshakes());
    let (i_req0, i_conn0) = (ic.requests().len(), ic.connections());

    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("{}: {e}", kind.name()))?;
    let stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            lines.push((Instant::now(), line));
        }
        lines
    });
    // Once it has exited, and before it is reaped: how long its main thread waited for a CPU.
    let runqueue_ms = wait_exited(child.id() as libc::pid_t)
        .ok()
        .and_then(|()| fs::read_to_string(format!("/proc/{}/schedstat", child.id())).ok())
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|ns| ns / 1e6);
    let (status, rusage) = wait4(child.id() as libc::pid_t)?;
    let end = Instant::now();
    let lines = reader.join().unwrap_or_default();

    let ms_since = |t: Instant| t.saturating_duration_since(start).as_secs_f64() * 1000.0;
    let shown: String = lines
        .iter()
        .map(|(_, l)| l.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    if status != 0 {
        return Err(format!(
            "{} run {index} exited with status {status}:\n{shown}",
            kind.name()
        ));
    }
    let ttf = lines
        .iter()
        .find(|(_, l)| l.contains(MARKER))
        .map(|(t, _)| ms_since(*t))
        .ok_or_else(|| format!("{} run {index}: no {MARKER:?} line:\n{shown}", kind.name()))?;
    files
        .check()
        .map_err(|e| format!("{} run {index}: {e}", kind.name()))?;

    let (full1, res1) = vc.tls_handshakes();
    let v_reqs: Vec<RecordedRequest> = vc.requests().split_off(v_req0);
    let i_reqs: Vec<RecordedRequest> = ic.requests().split_off(i_req0);
    let mut timeline: Vec<(f64, String)> = Vec::new();
    for (sim, reqs) in [("imds ", &i_reqs), ("vault", &v_reqs)] {
        for r in reqs {
            timeline.push((
                ms_since(r.at),
                format!(
                    "{sim} conn {:>3}  {} {} -> {} (request read; answered ~latency later)",
                    r.conn_id,
                    r.method,
                    r.path_only(),
                    r.status
                ),
            ));
        }
    }
    for (t, l) in &lines {
        timeline.push((ms_since(*t), format!("stderr  {l}")));
    }
    timeline.push((ms_since(end), "exit".into()));
    timeline.sort_by(|x, y| x.0.total_cmp(&y.0));

    let tv = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    let maxrss_kib = if rss {
        let text = fs::read_to_string(&rss_file).map_err(|e| format!("{TIME}: {e}"))?;
        Some(
            text.lines()
                .last()
                .and_then(|l| l.trim().parse::<i64>().ok())
                .ok_or_else(|| format!("{TIME} wrote {text:?}"))?,
        )
    } else {
        None
    };
    let phases = match kind {
        Kind::Agent | Kind::Baseline => {
            let l: Vec<(f64, &str)> = lines
                .iter()
                .map(|(t, l)| (ms_since(*t), l.as_str()))
                .collect();
            let v: Vec<(f64, &str)> = v_reqs
                .iter()
                .map(|r| (ms_since(r.at), r.path_only()))
                .collect();
            phases(ttf, &l, &v, latency_vault)
        }
        Kind::Recipe => None,
    };
    let run = Run {
        kind,
        ttf,
        total: ms_since(end),
        cpu_ms: tv(rusage.ru_utime) + tv(rusage.ru_stime),
        maxrss_kib,
        rss_probe: rss,
        vault_requests: v_reqs.len(),
        vault_connections: vc.connections() - v_conn0,
        tls_full: full1 - full0,
        tls_resumed: res1 - res0,
        imds_requests: i_reqs.len(),
        imds_connections: ic.connections() - i_conn0,
        timeline,
        phases,
        runqueue_ms,
    };
    let _ = fs::remove_dir_all(&dir);
    Ok(run)
}

struct Outputs {
    ad: PathBuf,
    api: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// The API key the world holds, so that both programs' output can be checked against it.
const BENCH_API_KEY: &str = "bench-api-key-0123456789abcdef";

impl Outputs {
    /// Both programs must have written every file with the expected kind of content.
    fn check(&self) -> Result<(), String> {
        let read = |p: &Path| fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
        let ad = read(&self.ad)?;
        if !ad.contains("svc-join") {
            return Err(format!("{}: no username", self.ad.display()));
        }
        if read(&self.api)?.trim() != BENCH_API_KEY {
            return Err(format!("{}: wrong api key", self.api.display()));
        }
        if !read(&self.cert)?.starts_with("-----BEGIN CERTIFICATE-----") {
            return Err(format!("{}: not a certificate", self.cert.display()));
        }
        if !read(&self.key)?.contains("PRIVATE KEY-----") {
            return Err(format!("{}: not a private key", self.key.display()));
        }
        Ok(())
    }
}

fn agent_config(env: &Env, state: &Path, files: &Outputs) -> String {
    // Outside a benchmark these are root-owned; a non-root user gets files of their own.
    let uid = unsafe { libc::geteuid() };
    let gid = unsafe { libc::getegid() };
    let owner = if uid == 0 {
        String::new()
    } else {
        format!("  owner = \"{uid}\"\n  group = \"{gid}\"\n")
    };
    format!(
        r#"[vault]
address = "{vault}"
ca_cert = "{ca}"

[auth]
role = "web"

[imds]
endpoint = "{imds}"

[state]
dir = "{state}"

[status]
file = "{state}/status.json"

[[secret]]
name = "ad-join"
path = "secret/data/ad/join"
  [[secret.file]]
  path = "{ad}"
  format = "env"
  fields = ["username", "password"]
{owner}
[[secret]]
name = "api-key"
path = "secret/data/app/api"
  [[secret.file]]
  path = "{api}"
  fields = ["api_key"]
{owner}
[[secret]]
name = "tls"
path = "pki_int/issue/web"
data = {{ common_name = "{{{{ local-hostname }}}}", ip_sans = "{{{{ local-ipv4 }}}}", ttl = "72h" }}
  [[secret.file]]
  path = "{cert}"
  fields = ["certificate", "ca_chain?"]
  mode = "0644"
{owner}
  [[secret.file]]
  path = "{key}"
  fields = ["private_key"]
{owner}"#,
        vault = env.sims.vault.url(),
        ca = env.ca.display(),
        imds = env.sims.imds.url(),
        state = state.display(),
        ad = files.ad.display(),
        api = files.api.display(),
        cert = files.cert.display(),
        key = files.key.display(),
    )
}

/// Waits until `pid` has exited, leaving it unreaped (its /proc entry stays readable).
fn wait_exited(pid: libc::pid_t) -> Result<(), String> {
    loop {
        // SAFETY: zeroed siginfo_t is valid; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: plain syscall with a valid pointer.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("waitid: {e}"));
        }
    }
}

fn wait4(pid: libc::pid_t) -> Result<(i32, libc::rusage), String> {
    let mut status: libc::c_int = 0;
    // SAFETY: zeroed rusage is a valid value; wait4 fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: plain syscall with valid pointers.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("wait4: {e}"));
        }
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    Ok((code, ru))
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|x| x.1.trim().to_string())
        .unwrap_or_else(|| "?".into());
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mem_kib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    format!(
        "{model}, {cpus} CPU(s), {:.0} GiB RAM, Linux {kernel}",
        mem_kib as f64 / 1024.0 / 1024.0
    )
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = p * (v.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (rank - lo as f64)
}

fn median(values: &[f64]) -> f64 {
    percentile(values, 0.5)
}

fn median_run<'a>(runs: &[&'a Run]) -> &'a Run {
    let m = median(&runs.iter().map(|r| r.ttf).collect::<Vec<_>>());
    runs.iter()
        .min_by(|x, y| (x.ttf - m).abs().total_cmp(&(y.ttf - m).abs()))
        .expect("at least one run")
}

fn col(runs: &[&Run], f: impl Fn(&Run) -> f64) -> Vec<f64> {
    runs.iter().map(|r| f(r)).collect()
}

#[allow(clippy::too_many_arguments)]
fn report(
    o: &Opts,
    a: &[&Run],
    b: &[&Run],
    rss: &(Vec<i64>, Vec<i64>),
    agent_size: u64,
    load_before: &str,
    load_after: &str,
    took: Duration,
) -> bool {
    let (li, lv) = (o.latency_imds as f64, o.latency_vault as f64);
    // 2 IMDS round trips (token, then the parallel reads) + 1 TCP and TLS set-up to Vault
    // + the login + one round of parallel secret reads; the revoke need not delay the files.
    let bound = 2.0 * li + lv + lv + lv;
    // The whole run: the same, then the revoke's round trip.
    let total_bound = bound + lv;
    let ttf_a = median(&col(a, |r| r.ttf));
    let total_a = median(&col(a, |r| r.total));
    let ttf_b = median(&col(b, |r| r.ttf));
    let ratio = ttf_b / ttf_a;

    println!("vaultboot boot benchmark: {} runs of each, alternating (A B A B ...), after 1 warm-up run of each", o.runs);
    println!("machine:  {}", machine());
    println!(
        "load avg: {load_before} before, {load_after} after (1, 5, 15 min); benchmark took {:.0} s",
        took.as_secs_f64()
    );
    println!(
        "latency:  IMDS {li} ms per answer + {li} ms per new TCP connection; \
         Vault {lv} ms per answer + {lv} ms per new TCP connection (before TLS)"
    );
    println!("secrets:  KV v2 secret/ad/join (env file), KV v2 secret/app/api (raw), PKI pki_int/issue/web with {{{{ local-hostname }}}} / {{{{ local-ipv4 }}}} (cert + key): 4 files");
    println!();
    println!(
        "{:<44} {:>16} {:>16} {:>8}",
        "median [p10 .. p90]", "vaultboot", "curl recipe", "ratio"
    );
    let row = |name: &str, f: &dyn Fn(&Run) -> f64, digits: usize, ratio: bool| {
        let (ca, cb) = (col(a, f), col(b, f));
        let (ma, mb) = (median(&ca), median(&cb));
        let r = if ratio {
            format!("{:.1}x", mb / ma)
        } else {
            String::new()
        };
        println!(
            "{:<44} {:>16} {:>16} {:>8}",
            name,
            format!("{ma:.digits$}"),
            format!("{mb:.digits$}"),
            r
        );
        let spread = |c: &[f64]| {
            format!(
                "{:.digits$} .. {:.digits$}",
                percentile(c, 0.1),
                percentile(c, 0.9)
            )
        };
        println!("{:<44} {:>16} {:>16}", "", spread(&ca), spread(&cb));
    };
    row("time to files (ms)", &|r| r.ttf, 1, true);
    row("total wall time (ms)", &|r| r.total, 1, true);
    row("CPU time, user + system (ms)", &|r| r.cpu_ms, 1, true);
    row(
        "main thread's wait for a CPU (ms)",
        &|r| r.runqueue_ms.unwrap_or(f64::NAN),
        1,
        false,
    );
    {
        let mib = |v: &[i64]| v.iter().map(|k| *k as f64 / 1024.0).collect::<Vec<_>>();
        let (ca, cb) = (mib(&rss.0), mib(&rss.1));
        println!(
            "{:<44} {:>16} {:>16}",
            format!(
                "peak RSS (MiB; {} runs under {TIME})",
                ca.len().min(cb.len())
            ),
            format!("{:.2}", median(&ca)),
            format!("{:.2}", median(&cb))
        );
        let range = |c: &[f64]| format!("{:.2} .. {:.2}", percentile(c, 0.0), percentile(c, 1.0));
        println!(
            "{:<44} {:>16} {:>16}",
            "  min .. max",
            range(&ca),
            range(&cb)
        );
    }
    let count_row = |name: &str, f: &dyn Fn(&Run) -> f64| {
        let (ca, cb) = (col(a, f), col(b, f));
        let range = |c: &[f64]| {
            let (lo, hi) = (percentile(c, 0.0), percentile(c, 1.0));
            if lo == hi {
                format!("{lo:.0}")
            } else {
                format!("{:.0} ({lo:.0}..{hi:.0})", median(c))
            }
        };
        println!("{:<44} {:>16} {:>16}", name, range(&ca), range(&cb));
    };
    count_row("Vault HTTP requests", &|r| r.vault_requests as f64);
    count_row("Vault TCP connections", &|r| r.vault_connections as f64);
    count_row("Vault TLS handshakes, full", &|r| r.tls_full as f64);
    count_row("Vault TLS handshakes, resumed", &|r| r.tls_resumed as f64);
    count_row("IMDS HTTP requests", &|r| r.imds_requests as f64);
    count_row("IMDS TCP connections", &|r| r.imds_connections as f64);
    println!(
        "{:<44} {:>16} {:>16}",
        "binary size (bytes)",
        agent_size,
        o.recipe_size
            .map(|s| format!("{s}*"))
            .unwrap_or_else(|| "n/a".into())
    );
    if o.recipe_size.is_some() {
        println!("{:<44} {:>16} {:>16}", "", "", "*bash+curl+jq+libs");
    }
    println!();
    println!(
        "lower bound for time to files: {bound:.1} ms = 2 x {li} (IMDS round trips) + {lv} (Vault TCP+TLS set-up) \
         + {lv} (login) + {lv} (one round of parallel reads)"
    );
    println!(
        "lower bound for total wall time: {total_bound:.1} ms = the above + {lv} (the revoke)"
    );
    println!(
        "vaultboot time to files / bound: {:.2}x   total wall time / bound: {:.2}x   \
         curl recipe / vaultboot: {ratio:.1}x",
        ttf_a / bound,
        total_a / total_bound
    );
    let calm: Vec<f64> = a
        .iter()
        .filter(|r| r.runqueue_ms.is_some_and(|w| w < CALM_MS))
        .map(|r| r.ttf)
        .collect();
    if !calm.is_empty() {
        println!(
            "vaultboot runs whose main thread waited < {CALM_MS} ms for a CPU: {} of {}, \
             median time to files {:.1} ms ({:.2}x the bound)",
            calm.len(),
            a.len(),
            median(&calm),
            median(&calm) / bound
        );
    }
    let ph: Vec<Phases> = a.iter().filter_map(|r| r.phases).collect();
    if !ph.is_empty() {
        println!();
        println!(
            "where vaultboot's time to files goes beyond 3 x {lv} ms of Vault latency \
             (median [p10 .. p90] of each part, ms):"
        );
        for (name, f) in PHASES {
            let c: Vec<f64> = ph.iter().map(f).collect();
            println!(
                "  {:<44} {:>6.1}  [{:.1} .. {:.1}]",
                name,
                median(&c),
                percentile(&c, 0.1),
                percentile(&c, 0.9)
            );
        }
    }

    let max_rss_mib = rss.0.iter().copied().max().unwrap_or(0) as f64 / 1024.0;
    // The login and then the 3 secrets at once: 3 connections, opened ahead.
    let conn_max = a.iter().map(|r| r.vault_connections).max().unwrap_or(0);
    let checks = [
        (
            format!(
                "time to files within 1.25x of the bound ({:.2}x)",
                ttf_a / bound
            ),
            ttf_a <= 1.25 * bound,
        ),
        (
            format!(
                "total wall time within 1.25x of its bound ({:.2}x)",
                total_a / total_bound
            ),
            total_a <= 1.25 * total_bound,
        ),
        (
            format!("at least 4x faster than the curl recipe ({ratio:.1}x)"),
            ratio >= 4.0,
        ),
        (
            format!("peak RSS under 8 MiB (max over runs {max_rss_mib:.2} MiB)"),
            max_rss_mib < 8.0,
        ),
        (
            format!("at most one Vault connection per secret (max {conn_max} for 3)"),
            conn_max <= 3,
        ),
        (
            format!("binary at most 2.2 MB ({:.2} MB)", agent_size as f64 / 1e6),
            agent_size <= 2_200_000,
        ),
    ];
    println!();
    println!("targets:");
    let mut all = true;
    for (what, ok) in &checks {
        println!("  [{}] {what}", if *ok { "met" } else { "MISSED" });
        all &= ok;
    }
    all
}

fn write_csv(path: &Path, runs: &[Run]) -> std::io::Result<()> {
    let mut f = fs::File::create(path)?;
    writeln!(
        f,
        "program,rss_probe,ttf_ms,total_ms,cpu_ms,maxrss_kib,vault_requests,vault_connections,tls_full,tls_resumed,imds_requests,imds_connections,runqueue_ms,start_ms,to_login_ms,login_to_reads_ms,reads_spread_ms,reads_to_fetched_ms,files_ms"
    )?;
    for r in runs {
        let ph = r.phases.map(|p| {
            format!(
                "{:.3},{:.3},{:.3},{:.3},{:.3},{:.3}",
                p.start, p.to_login, p.login_to_reads, p.reads_spread, p.reads_to_fetched, p.files
            )
        });
        writeln!(
            f,
            "{},{},{:.3},{:.3},{:.3},{},{},{},{},{},{},{},{},{}",
            r.kind.name(),
            u8::from(r.rss_probe),
            r.ttf,
            r.total,
            r.cpu_ms,
            r.maxrss_kib.map(|k| k.to_string()).unwrap_or_default(),
            r.vault_requests,
            r.vault_connections,
            r.tls_full,
            r.tls_resumed,
            r.imds_requests,
            r.imds_connections,
            r.runqueue_ms.map(|w| format!("{w:.3}")).unwrap_or_default(),
            ph.unwrap_or_else(|| ",,,,,".into())
        )?;
    }
    Ok(())
}

/// The same figures for the baseline binary, next to vaultboot's, from the same alternating run.
fn report_baseline(path: &Path, before: &[&Run], after: &[&Run], rss: (&[i64], &[i64])) {
    println!();
    println!(
        "before/after in the same run: baseline {} ({} bytes)",
        path.display(),
        fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    );
    println!("{:<44} {:>16} {:>16}", "median", "baseline", "vaultboot");
    type Row = (&'static str, fn(&Run) -> f64);
    let rows: [Row; 9] = [
        ("time to files (ms)", |r| r.ttf),
        ("total wall time (ms)", |r| r.total),
        ("CPU time, user + system (ms)", |r| r.cpu_ms),
        ("Vault HTTP requests", |r| r.vault_requests as f64),
        ("Vault TCP connections", |r| r.vault_connections as f64),
        ("Vault TLS handshakes, full", |r| r.tls_full as f64),
        ("Vault TLS handshakes, resumed", |r| r.tls_resumed as f64),
        ("IMDS TCP connections", |r| r.imds_connections as f64),
        ("main thread's wait for a CPU (ms)", |r| {
            r.runqueue_ms.unwrap_or(f64::NAN)
        }),
    ];
    for (name, f) in rows {
        println!(
            "{:<44} {:>16.2} {:>16.2}",
            name,
            median(&col(before, f)),
            median(&col(after, f))
        );
    }
    let mib = |v: &[i64]| median(&v.iter().map(|k| *k as f64 / 1024.0).collect::<Vec<_>>());
    println!(
        "{:<44} {:>16.2} {:>16.2}",
        "peak RSS (MiB)",
        mib(rss.0),
        mib(rss.1)
    );
    for (name, f) in PHASES {
        let m = |runs: &[&Run]| {
            median(
                &runs
                    .iter()
                    .filter_map(|r| r.phases.as_ref().map(f))
                    .collect::<Vec<_>>(),
            )
        };
        println!("{:<44} {:>16.2} {:>16.2}", name, m(before), m(after));
    }
}
