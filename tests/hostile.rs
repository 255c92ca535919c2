//! Hostile and broken endpoints: IMDS and Vault answering with what no honest server sends.
//!
//! One table of cases (`table!` below, in the order of docs/hardening.md's table), each run
//! against IMDS and against Vault where it applies: a row gives the hostile answer (or server)
//! and, per endpoint, which requests get it and what the agent must do. Every case first makes
//! a good run (so that every output and the nonce exist), then the hostile one, and checks its
//! exit status and that no file changed. The TLS cases (Vault only, a whole other server) follow
//! the table. A few cases live in tests/boot.rs already (a certificate from another CA, a
//! redirect of a secret read, a never-ending secret body).

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use vaultboot_sim::{Control, Fault, TestCa, VaultOptions, VaultSim};

const DOCUMENT: &str = "/latest/dynamic/instance-identity/document";
const TOKEN: &str = "/latest/api/token";
const LOGIN: &str = "/v1/auth/aws/login";
const API: &str = "/v1/secret/data/app/api";
const AD_JOIN: &str = "/v1/secret/data/ad/join";
const HOSTNAME: &str = "/latest/meta-data/local-hostname";
const LOCAL_IPV4: &str = "/latest/meta-data/local-ipv4";
/// A value that, logged as it is, would be a line of its own at error priority on the journal.
const FORGED_LINE: &str = "us-east-1\n<3>vaultboot: error: FORGED by a metadata value";

/// Short budgets so that the cases that run into the deadline end quickly.
fn config(env: &Env) -> Config {
    env.config()
        .set("retry", "deadline", "3s")
        .set("vault", "request_timeout", "1s")
}

/// A good run first; returns the configuration and the snapshot of outputs and state.
fn prepared(env: &Env) -> (PathBuf, Snapshot) {
    let cfg = env.write(&config(env));
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "the good run: {}", out.log());
    assert_eq!(env.out_files().len(), 5);
    (cfg, env.snapshot())
}

/// Runs the hostile case: this exit status, and not one file changed.
fn refused(env: &Env, cfg: &Path, before: &Snapshot, status: i32) -> Outcome {
    let out = env.run(cfg);
    assert_eq!(out.status, status, "{}", out.log());
    assert_same_tree(before, &env.snapshot(), "after a refused run");
    assert!(out.stderr.contains("no file was changed"), "{}", out.stderr);
    assert_eq!(env.vault.live_tokens(), 0, "a token was left unrevoked");
    out
}

/// A whole HTTP answer, written raw; Content-Length added unless given.
fn raw(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Fault {
    let mut head = format!("HTTP/1.1 {status}\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    Fault::Raw(bytes)
}

fn identity_document() -> String {
    vaultboot_sim::Identity::sample(INSTANCE).document("2024-01-01T00:00:00Z")
}

/// The identity document with one field changed (and the availability zone, if given).
fn document_with(field: &str, value: &str, zone: Option<&str>) -> String {
    let mut doc: serde_json::Value = serde_json::from_str(&identity_document()).unwrap();
    assert!(doc.get(field).is_some(), "no {field} in the document");
    doc[field] = value.into();
    if let Some(zone) = zone {
        doc["availabilityZone"] = zone.into();
    }
    doc.to_string()
}

/// A listener nobody may connect to: it proves where a token did NOT go.
struct Catcher(TcpListener);

impl Catcher {
    fn new() -> Catcher {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        Catcher(l)
    }
    fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }
    fn untouched(&self) -> bool {
        matches!(self.0.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

// ------------------------------------------------------------------------------------------
// The table's machinery

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Imds,
    Vault,
}

impl Endpoint {
    fn control(self, env: &Env) -> &Control {
        match self {
            Endpoint::Imds => env.imds.control(),
            Endpoint::Vault => env.vault.control(),
        }
    }

    /// Where the configuration names this endpoint.
    fn key(self) -> (&'static str, &'static str) {
        match self {
            Endpoint::Imds => ("imds", "endpoint"),
            Endpoint::Vault => ("vault", "address"),
        }
    }

    /// What an honest server answers to `path` (for the cases that distort it).
    fn honest(self, env: &Env, path: &str) -> Vec<u8> {
        match path {
            DOCUMENT => identity_document().into_bytes(),
            API => {
                let data = serde_json::json!({"api_key": env.api_key});
                serde_json::json!({"data": {"data": data, "metadata": {"version": 1}}})
                    .to_string()
                    .into_bytes()
            }
            LOGIN => br#"{"auth":{"client_token":"hvs.CAESIAAAAAAAAAAAAAAAAAAAAAAA","accessor":"a","lease_duration":60}}"#.to_vec(),
            _ => panic!("no honest answer for {self:?} {path}"),
        }
    }

    /// The Content-Type the real service labels its JSON with.
    fn json_label(self) -> &'static str {
        match self {
            Endpoint::Imds => "text/plain",
            Endpoint::Vault => "application/json",
        }
    }

    /// A path on the same host that a relative redirect points to.
    fn elsewhere(self) -> &'static str {
        match self {
            Endpoint::Imds => "/latest/meta-data/elsewhere",
            Endpoint::Vault => "/v1/secret/data/other",
        }
    }
}

/// What the endpoint does instead of answering honestly.
enum Hostile {
    /// This answer to the requests the expectation names.
    Answer(Fault),
    /// The endpoint's address leads to this server instead (`ca`: the Vault CA to trust);
    /// `_listener` keeps it open for the run.
    Server {
        url: String,
        ca: Option<PathBuf>,
        _listener: Option<TcpListener>,
    },
}

/// Everything a case sees: the simulators after the good run, and a catcher for redirects.
struct Ctx {
    env: Env,
    before: Snapshot,
    catcher: Catcher,
    /// How many requests each simulator had seen after the good run.
    imds_requests: usize,
    vault_requests: usize,
}

/// What one endpoint must do with a row's hostile answers.
#[derive(Clone, Copy)]
struct Expect {
    /// The requests (method, path) that get the hostile answer; none for a hostile server.
    at: &'static [(&'static str, &'static str)],
    /// How many answers in a row are hostile: `ONCE`, or `ALWAYS` (until the deadline).
    times: usize,
    deadline: &'static str,
    /// The exit status; 0: the run succeeds (and the snapshot is taken again).
    status: i32,
    /// What stderr must say.
    says: &'static [&'static str],
    /// How long the run may take: at least, less than.
    within: (Duration, Duration),
    /// Any further assertion.
    check: fn(&Ctx, &Outcome),
}

const ONCE: usize = 1;
const ALWAYS: usize = 10_000;

/// Refused as malformed (65), at once, with one hostile answer.
const MALFORMED: Expect = Expect {
    at: &[],
    times: ONCE,
    deadline: "3s",
    status: 65,
    says: &[],
    within: (Duration::ZERO, Duration::MAX),
    check: no_check,
};

/// Unavailable (69) at the deadline: the hostile answer every time.
const UNAVAILABLE: Expect = Expect {
    times: ALWAYS,
    status: 69,
    ..MALFORMED
};

/// The run succeeds despite the hostile answer.
const RECOVERED: Expect = Expect {
    status: 0,
    ..MALFORMED
};

fn no_check(_: &Ctx, _: &Outcome) {}

struct Row {
    /// The hostile answers (or servers) for one endpoint and request path, each a case.
    hostile: fn(&Ctx, Endpoint, &str) -> Vec<Hostile>,
    imds: Option<Expect>,
    vault: Option<Expect>,
}

/// Runs a row against each endpoint it applies to, each on simulators of its own.
fn run_row(name: &str, row: Row) {
    let mut cases = 0;
    for (endpoint, expect) in [(Endpoint::Imds, row.imds), (Endpoint::Vault, row.vault)] {
        let Some(expect) = expect else { continue };
        let env = Env::new();
        let (_, before) = prepared(&env);
        let mut ctx = Ctx {
            imds_requests: env.imds.control().requests().len(),
            vault_requests: env.vault.control().requests().len(),
            before,
            catcher: Catcher::new(),
            env,
        };
        let targets: &[(&str, &str)] = if expect.at.is_empty() {
            &[("", "")]
        } else {
            expect.at
        };
        for &(method, path) in targets {
            for (i, hostile) in (row.hostile)(&ctx, endpoint, path).into_iter().enumerate() {
                let case = format!("{name}: {endpoint:?} {method} {path} #{i}");
                // Printed with the test's output when it fails, and with --nocapture.
                eprintln!("hostile case {case}");
                run_case(&mut ctx, endpoint, &expect, (method, path), hostile, &case);
                cases += 1;
            }
        }
    }
    assert!(cases > 0, "{name}: no case ran");
}

fn run_case(
    ctx: &mut Ctx,
    endpoint: Endpoint,
    expect: &Expect,
    (method, path): (&str, &str),
    hostile: Hostile,
    case: &str,
) {
    let env = &ctx.env;
    let control = endpoint.control(env);
    control.clear_faults();
    let mut text = config(env).set("retry", "deadline", expect.deadline);
    match hostile {
        Hostile::Answer(fault) => control.inject(Some(method), path, fault, expect.times),
        Hostile::Server { url, ca, .. } => {
            let (section, key) = endpoint.key();
            text = text.set(section, key, url);
            if let Some(ca) = ca {
                text = text.set("vault", "ca_cert", &ca);
            }
        }
    }
    let cfg = env.write(&text);
    let out = if expect.status == 0 {
        let out = env.run(&cfg);
        assert_eq!(out.status, 0, "{case}: {}", out.log());
        ctx.before = env.snapshot();
        out
    } else {
        refused(env, &cfg, &ctx.before, expect.status)
    };
    control.clear_faults();
    for says in expect.says {
        assert!(
            out.stderr.contains(says),
            "{case}: no {says:?} in {}",
            out.stderr
        );
    }
    // The upper bound stretched for a slow runner (see `time_scale`): lower bounds are waits
    // the agent makes itself, whatever the machine.
    let (least, most) = (expect.within.0, scaled(expect.within.1));
    assert!(
        out.elapsed >= least && out.elapsed < most,
        "{case}: {:?} not in {least:?}..{most:?}",
        out.elapsed
    );
    (expect.check)(ctx, &out);
    assert!(
        ctx.catcher.untouched(),
        "{case}: something was sent elsewhere"
    );
}

/// Generates one test a row, named after it.
macro_rules! table {
    ($($name:ident: $row:expr;)*) => {
        $(
            #[test]
            fn $name() {
                run_row(stringify!($name), $row)
            }
        )*
    };
}

fn answers(faults: impl IntoIterator<Item = Fault>) -> Vec<Hostile> {
    faults.into_iter().map(Hostile::Answer).collect()
}

/// A JSON body labelled the way the service labels it.
fn labelled(endpoint: Endpoint, body: &[u8]) -> Fault {
    raw("200 OK", &[("Content-Type", endpoint.json_label())], body)
}

const LONG: Duration = Duration::from_secs(5);

// ------------------------------------------------------------------------------------------
// The table

table! {
    invalid_json_is_malformed: Row {
        hostile: |_, ep, path| {
            let body: &[u8] = match path {
                DOCUMENT => b"{\"instanceId\": i-0",
                API => b"{\"data\": {\"data\": ",
                _ => b"{\"auth\": nope}",
            };
            answers([labelled(ep, body)])
        },
        imds: Some(Expect {
            at: &[("GET", DOCUMENT)],
            says: &["not an identity document"],
            ..MALFORMED
        }),
        vault: Some(Expect {
            at: &[("GET", API), ("POST", LOGIN)],
            says: &["not JSON"],
            ..MALFORMED
        }),
    };

    not_utf8_is_malformed: Row {
        hostile: |_, _, path| {
            let body: &[u8] = match path {
                DOCUMENT => b"{\"instanceId\": \"\xff\xfe\"}",
                _ => b"{\"data\": {\"k\": \"\xff\xfe\"}}",
            };
            answers([raw("200 OK", &[], body)])
        },
        imds: Some(Expect { at: &[("GET", DOCUMENT)], ..MALFORMED }),
        vault: Some(Expect { at: &[("GET", API)], ..MALFORMED }),
    };

    // A connection that broke mid-answer is retried: once, the run succeeds; every time, it is
    // unavailable at the deadline.
    truncated_body_once_is_retried: Row {
        hostile: |ctx, ep, path| answers([truncated(&ep.honest(&ctx.env, path), None)]),
        imds: Some(Expect { at: &[("GET", DOCUMENT)], ..RECOVERED }),
        vault: Some(Expect { at: &[("GET", API)], ..RECOVERED }),
    };

    truncated_body_always_is_unavailable: Row {
        hostile: |ctx, ep, path| answers([truncated(&ep.honest(&ctx.env, path), Some(10))]),
        imds: Some(Expect {
            at: &[("GET", DOCUMENT)],
            within: (Duration::ZERO, Duration::from_secs(6)),
            ..UNAVAILABLE
        }),
        vault: Some(Expect {
            at: &[("GET", API)],
            within: (Duration::ZERO, Duration::from_secs(6)),
            ..UNAVAILABLE
        }),
    };

    chunked_body_cut_before_its_last_chunk_is_unavailable: Row {
        hostile: |ctx, ep, path| {
            let mut bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n".to_vec();
            bytes.extend_from_slice(&ep.honest(&ctx.env, path)[..16]);
            answers([Fault::Raw(bytes)])
        },
        imds: Some(Expect { at: &[("GET", DOCUMENT)], ..UNAVAILABLE }),
        vault: Some(Expect { at: &[("POST", LOGIN)], ..UNAVAILABLE }),
    };

    body_over_the_cap_is_malformed: Row {
        hostile: |_, _, _| {
            answers(["1048577", "5000000"].map(|length| {
                raw("200 OK", &[("Content-Length", length)], b"{\"instanceId\":\"")
            }))
        },
        imds: Some(Expect {
            at: &[("GET", DOCUMENT)],
            says: &["larger than 1048576"],
            ..MALFORMED
        }),
        vault: Some(Expect {
            at: &[("POST", LOGIN)],
            says: &["larger than 1048576"],
            check: only_the_good_run_logged_in,
            ..MALFORMED
        }),
    };

    never_ending_body_is_malformed: Row {
        hostile: |_, _, _| answers([Fault::EndlessBody]),
        imds: Some(Expect {
            at: &[("GET", DOCUMENT)],
            says: &["larger than 1048576"],
            within: (Duration::ZERO, Duration::from_secs(3)),
            ..MALFORMED
        }),
        vault: Some(Expect {
            at: &[("POST", LOGIN)],
            says: &["larger than 1048576"],
            within: (Duration::ZERO, Duration::from_secs(3)),
            check: only_the_good_run_logged_in,
            ..MALFORMED
        }),
    };

    // Reads the request, never answers: every attempt is cut by its timeout, the run by the
    // deadline.
    never_answering_is_cut_by_the_timeout: Row {
        hostile: |_, _, _| answers([Fault::Hang]),
        imds: Some(Expect {
            at: &[("PUT", TOKEN)],
            within: (Duration::from_millis(2500), LONG),
            ..UNAVAILABLE
        }),
        vault: Some(Expect {
            at: &[("POST", LOGIN)],
            within: (Duration::from_millis(2500), LONG),
            check: each_login_attempt_had_its_own_timeout,
            ..UNAVAILABLE
        }),
    };

    // Accepts the TCP connection, never reads nor answers (nor starts TLS).
    a_silent_server_is_cut_by_the_deadline: Row {
        hostile: |_, ep, _| {
            let silent = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = silent.local_addr().unwrap().port();
            vec![Hostile::Server {
                url: server_url(ep, port),
                ca: None,
                _listener: Some(silent),
            }]
        },
        imds: Some(Expect { within: (Duration::ZERO, LONG), ..UNAVAILABLE }),
        vault: Some(Expect { within: (Duration::ZERO, LONG), ..UNAVAILABLE }),
    };

    // Answers one byte every 100 ms, forever: the per-request timeout is a total, not per read.
    a_trickling_server_is_cut_by_the_deadline: Row {
        hostile: |ctx, ep, _| {
            let ca = (ep == Endpoint::Vault).then(|| {
                let ca = TestCa::new("trickle CA");
                ca.write_cert_pem(&ctx.env.path("trickle-ca.pem")).unwrap();
                ca
            });
            vec![Hostile::Server {
                url: server_url(ep, trickle_server(ca.as_ref())),
                ca: ca.map(|_| ctx.env.path("trickle-ca.pem")),
                _listener: None,
            }]
        },
        imds: Some(Expect { within: (Duration::ZERO, LONG), ..UNAVAILABLE }),
        vault: Some(Expect { within: (Duration::ZERO, LONG), ..UNAVAILABLE }),
    };

    // IMDS: refused at once. Vault (a standby redirects during an election): retried against the
    // configured address until the deadline, never followed with the nonce or the token.
    redirects_are_not_followed: Row {
        hostile: |ctx, ep, path| {
            let location = match ep {
                Endpoint::Imds => format!("http://127.0.0.1:{}{TOKEN}", ctx.catcher.port()),
                Endpoint::Vault => format!("https://localhost:{}{path}", ctx.catcher.port()),
            };
            answers(REDIRECTS.map(|status| raw(status, &[("Location", &location)], b"")))
        },
        imds: Some(Expect {
            at: &[("GET", DOCUMENT)],
            says: &["redirects are not followed"],
            ..MALFORMED
        }),
        vault: Some(Expect {
            at: &[("POST", LOGIN), ("GET", API)],
            check: vault_names_the_redirect_target,
            ..UNAVAILABLE
        }),
    };

    relative_redirects_are_not_followed: Row {
        hostile: |_, ep, _| {
            answers([raw("307 Temporary Redirect", &[("Location", ep.elsewhere())], b"")])
        },
        imds: Some(Expect {
            at: &[("GET", DOCUMENT)],
            says: &["redirects are not followed"],
            check: nothing_asked_elsewhere,
            ..MALFORMED
        }),
        vault: Some(Expect {
            at: &[("GET", API)],
            says: &["(same host)"],
            check: nothing_asked_elsewhere,
            ..UNAVAILABLE
        }),
    };

    // The body decides: IMDS labels its JSON text/plain, and Vault's Go client ignores the label.
    valid_json_under_another_content_type_is_accepted: Row {
        hostile: |ctx, ep, path| {
            let body = ep.honest(&ctx.env, path);
            answers(
                ["text/plain", "text/html; charset=utf-8"]
                    .map(|label| raw("200 OK", &[("Content-Type", label)], &body)),
            )
        },
        imds: Some(Expect { at: &[("GET", DOCUMENT)], ..RECOVERED }),
        vault: Some(Expect { at: &[("GET", API)], ..RECOVERED }),
    };

    // A page from something in the way (a proxy, a captive portal) is not an answer.
    a_page_labelled_json_is_malformed: Row {
        hostile: |_, _, _| {
            answers([raw(
                "200 OK",
                &[("Content-Type", "application/json")],
                b"<html><body>Please log in</body></html>",
            )])
        },
        imds: Some(Expect { at: &[("GET", DOCUMENT)], ..MALFORMED }),
        vault: Some(Expect { at: &[("GET", API)], says: &["not JSON"], ..MALFORMED }),
    };

    a_page_labelled_html_is_malformed: Row {
        hostile: |_, _, _| {
            answers([raw(
                "200 OK",
                &[("Content-Type", "text/html")],
                b"<html><body>Access denied by proxy</body></html>",
            )])
        },
        imds: Some(Expect { at: &[("GET", DOCUMENT)], ..MALFORMED }),
        vault: Some(Expect {
            at: &[("GET", API)],
            says: &["not JSON", "content type \"text/html\""],
            ..MALFORMED
        }),
    };

    // Which value would count (which api_key written, which token used and revoked)? Neither.
    duplicate_json_keys_are_malformed: Row {
        hostile: |_, ep, path| {
            let body = match path {
                DOCUMENT => identity_document()
                    .replacen('{', "{\"instanceId\": \"i-0fffffffffffffff0\",", 1),
                API => r#"{"data":{"data":{"api_key":"first-value-1","api_key":"second-value-2"},"metadata":{"version":1}}}"#.into(),
                _ => r#"{"auth":{"client_token":"hvs.AAAAAAAAAAAAAAAAAAAAAAAA","client_token":"hvs.BBBBBBBBBBBBBBBBBBBBBBBB","accessor":"x","lease_duration":60}}"#.into(),
            };
            answers([labelled(ep, body.as_bytes())])
        },
        imds: Some(Expect { at: &[("GET", DOCUMENT)], ..MALFORMED }),
        vault: Some(Expect {
            at: &[("GET", API), ("POST", LOGIN)],
            says: &["the same key twice"],
            check: no_duplicate_token_was_sent,
            ..MALFORMED
        }),
    };

    // IMDS: instanceId a number. Vault: a field that is an object or a list of objects cannot
    // go into a raw or env file (a json file keeps JSON types, so there it is fine).
    fields_of_the_wrong_type_are_malformed: Row {
        hostile: |_, ep, _| match ep {
            Endpoint::Imds => {
                let doc = identity_document();
                let wrong_type = doc.replace(&format!("\"{INSTANCE}\""), "12345");
                assert_ne!(wrong_type, doc);
                answers([labelled(ep, wrong_type.as_bytes())])
            }
            Endpoint::Vault => {
                let passwords = [r#"{"nested":"x"}"#, r#"[{"a":1}]"#, "null"];
                answers(passwords.map(|password| {
                    labelled(ep, format!(
                        r#"{{"data":{{"data":{{"username":"svc-join","password":{password}}},"metadata":{{"version":1}}}}}}"#
                    ).as_bytes())
                }))
            }
        },
        imds: Some(Expect { at: &[("GET", DOCUMENT)], ..MALFORMED }),
        vault: Some(Expect { at: &[("GET", AD_JOIN)], says: &["\"password\""], ..MALFORMED }),
    };

    // Values used in log lines, templated output paths and request bodies, each out of its
    // AWS format: a forged log line, path segments, the wrong length or alphabet.
    metadata_values_out_of_their_aws_format_are_malformed: Row {
        hostile: |_, ep, path| {
            let values: Vec<String> = match path {
                DOCUMENT => [
                    ("region", FORGED_LINE),
                    ("region", "us-east-1/../../etc"),
                    ("availabilityZone", "us-east-1a/../../etc"),
                    ("availabilityZone", "us-east-1a\u{1b}[2J"),
                    ("accountId", "12345678901"),
                    ("accountId", "1234567890123"),
                    ("imageId", "ami-xyz"),
                    ("imageId", "ami-0123456789abcdef0/.."),
                    ("privateIp", "10.0.1.23\n10.0.1.24"),
                    ("privateIp", "fe80::1%ens5"),
                    ("privateIp", "FE80::1"),
                    ("instanceId", "i-0123/../x"),
                ]
                .map(|(field, value)| {
                    // A region refused on its own, not only by the zone's cross-check.
                    let zone = (field == "region").then(|| format!("{value}a"));
                    document_with(field, value, zone.as_deref())
                })
                .into(),
                HOSTNAME => ["ip-10-0-1-23/../../etc", "ip-10-0-1-23\u{7}", "..", "a..b"]
                    .map(String::from)
                    .into(),
                _ => ["10.0.1", "10.0.1.23/8", "ip-10-0-1-23", "010.0.1.23"].map(String::from).into(),
            };
            answers(values.iter().map(|v| labelled(ep, v.as_bytes())))
        },
        imds: Some(Expect {
            at: &[("GET", DOCUMENT), ("GET", HOSTNAME), ("GET", LOCAL_IPV4)],
            check: names_the_field_and_forges_no_line,
            ..MALFORMED
        }),
        vault: None,
    };

    // `data` (Vault) or the document (IMDS) is not an object.
    answers_that_are_not_objects_are_malformed: Row {
        hostile: |_, ep, _| {
            let bodies: &[&str] = match ep {
                Endpoint::Imds => &[r#"[1,2,3]"#, r#""just a string""#, "null"],
                Endpoint::Vault => &[
                    r#"{"data":"everything"}"#,
                    r#"{"data":null}"#,
                    r#"[1,2,3]"#,
                    r#""just a string""#,
                ],
            };
            answers(bodies.iter().map(|b| labelled(ep, b.as_bytes())))
        },
        imds: Some(Expect { at: &[("GET", DOCUMENT)], ..MALFORMED }),
        vault: Some(Expect { at: &[("GET", API)], says: &["secret \"api\""], ..MALFORMED }),
    };

    a_login_answer_without_auth_is_malformed: Row {
        hostile: |_, ep, _| {
            answers([
                r#"{"auth":{"client_token":12345}}"#,
                r#"{"auth":"hvs.token"}"#,
                r#"{"auth":null}"#,
                r#"{"auth":{"client_token":["hvs.a"]}}"#,
                r#"{}"#,
            ].map(|b| labelled(ep, b.as_bytes())))
        },
        imds: None,
        vault: Some(Expect {
            at: &[("POST", LOGIN)],
            says: &["login answer has no auth"],
            ..MALFORMED
        }),
    };

    // An IMDS session token or a Vault client_token that is not one: never sent as a header
    // (Vault: no secret read, no revoke with it).
    tokens_that_are_not_tokens_are_malformed_and_never_sent: Row {
        hostile: |_, ep, _| match ep {
            Endpoint::Imds => answers([raw("200 OK", &[], b"not a token\r\nX-Injected: yes")]),
            Endpoint::Vault => {
                let long = "a".repeat(2000);
                answers(["", " ", "hvs.with space", "hvs.a\\r\\nX-Injected: 1", &long].map(|token| {
                    labelled(ep, format!(
                        r#"{{"auth":{{"client_token":"{token}","accessor":"acc","lease_duration":60}}}}"#
                    ).as_bytes())
                }))
            }
        },
        imds: Some(Expect {
            at: &[("PUT", TOKEN)],
            says: &["not a token"],
            check: no_bad_session_token_was_sent,
            ..MALFORMED
        }),
        vault: Some(Expect {
            at: &[("POST", LOGIN)],
            says: &["client_token"],
            check: nothing_but_logins_was_sent,
            ..MALFORMED
        }),
    };

    huge_headers_are_malformed: Row {
        hostile: |ctx, ep, path| {
            let huge = "x".repeat(100 * 1024);
            answers([raw("200 OK", &[("X-Padding", &huge)], &ep.honest(&ctx.env, path))])
        },
        imds: Some(Expect { at: &[("GET", DOCUMENT)], ..MALFORMED }),
        vault: Some(Expect { at: &[("GET", API)], ..MALFORMED }),
    };

    // Many headers, each small: the total counts.
    too_many_headers_are_malformed: Row {
        hostile: |ctx, ep, path| {
            let many: Vec<(String, String)> =
                (0..3000).map(|i| (format!("X-H{i}"), "y".repeat(20))).collect();
            let refs: Vec<(&str, &str)> =
                many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            answers([raw("200 OK", &refs, &ep.honest(&ctx.env, path))])
        },
        imds: Some(Expect { at: &[("GET", DOCUMENT)], ..MALFORMED }),
        vault: Some(Expect { at: &[("GET", API)], ..MALFORMED }),
    };

    // Retry-After of a year, or far in the future: the deadline still ends the run.
    a_huge_retry_after_keeps_the_deadline: Row {
        hostile: |_, _, _| {
            answers(["31536000", "Fri, 01 Jan 2100 00:00:00 GMT", "99999999999999999999"].map(
                |retry_after| {
                    raw(
                        "503 Service Unavailable",
                        &[("Retry-After", retry_after), ("Content-Type", "application/json")],
                        br#"{"errors":["sealed"]}"#,
                    )
                },
            ))
        },
        imds: None,
        vault: Some(Expect {
            at: &[("POST", LOGIN)],
            within: (Duration::ZERO, LONG),
            ..UNAVAILABLE
        }),
    };

    error_messages_are_one_bounded_line_without_escapes: Row {
        hostile: |_, _, _| {
            let message = format!(
                "permission denied\n\x1b[31mvaultboot: done: all fine\x1b[0m\r{}",
                "A".repeat(200_000)
            );
            answers([Fault::status(403, &message)])
        },
        imds: None,
        vault: Some(Expect {
            at: &[("GET", API)],
            status: 77,
            check: one_bounded_line_without_escapes,
            ..MALFORMED
        }),
    };

    garbage_instead_of_http_is_malformed: Row {
        hostile: |_, _, _| {
            answers([
                Fault::Raw(b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec()),
                Fault::Raw(b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n{}".to_vec()),
            ])
        },
        imds: Some(Expect { at: &[("GET", DOCUMENT)], ..MALFORMED }),
        vault: Some(Expect { at: &[("GET", API)], ..MALFORMED }),
    };

    // A connection closed without a byte is a broken connection: retried.
    an_empty_answer_is_retried: Row {
        hostile: |_, _, _| answers([Fault::Raw(Vec::new())]),
        imds: Some(Expect { at: &[("GET", DOCUMENT)], times: 2, ..RECOVERED }),
        vault: Some(Expect { at: &[("GET", API)], times: 2, ..RECOVERED }),
    };
}

const REDIRECTS: [&str; 4] = [
    "301 Moved Permanently",
    "302 Found",
    "307 Temporary Redirect",
    "308 Permanent Redirect",
];

/// The hostile answer: `honest` announced whole, cut after `n` bytes (half without `n`).
fn truncated(honest: &[u8], n: Option<usize>) -> Fault {
    let mut bytes = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        honest.len()
    )
    .into_bytes();
    bytes.extend_from_slice(&honest[..n.unwrap_or(honest.len() / 2)]);
    Fault::Raw(bytes)
}

fn server_url(endpoint: Endpoint, port: u16) -> String {
    match endpoint {
        Endpoint::Imds => format!("http://127.0.0.1:{port}"),
        Endpoint::Vault => format!("https://localhost:{port}"),
    }
}

fn only_the_good_run_logged_in(ctx: &Ctx, _: &Outcome) {
    assert_eq!(ctx.env.vault.logins(), 1, "only the good run logged in");
}

fn each_login_attempt_had_its_own_timeout(ctx: &Ctx, _: &Outcome) {
    let hung = ctx
        .env
        .vault
        .control()
        .requests()
        .iter()
        .filter(|r| r.path == LOGIN && r.status == 0)
        .count();
    assert!(hung >= 2, "each attempt had its own timeout: {hung}");
}

fn vault_names_the_redirect_target(ctx: &Ctx, out: &Outcome) {
    let says = format!(
        "Vault kept redirecting to \"localhost:{}\"",
        ctx.catcher.port()
    );
    assert!(out.stderr.contains(&says), "{}", out.stderr);
}

fn nothing_asked_elsewhere(ctx: &Ctx, _: &Outcome) {
    for endpoint in [Endpoint::Imds, Endpoint::Vault] {
        let asked = endpoint.control(&ctx.env).requests();
        assert!(
            !asked.iter().any(|r| r.path == endpoint.elsewhere()),
            "{endpoint:?} followed"
        );
    }
}

fn no_duplicate_token_was_sent(ctx: &Ctx, _: &Outcome) {
    let sent_tokens = ctx
        .env
        .vault
        .control()
        .requests()
        .iter()
        .filter(|r| {
            r.header("x-vault-token")
                .is_some_and(|t| t.contains("AAAAAAAA") || t.contains("BBBBBBBB"))
        })
        .count();
    assert_eq!(sent_tokens, 0);
}

fn no_bad_session_token_was_sent(ctx: &Ctx, _: &Outcome) {
    let requests = ctx.env.imds.control().requests();
    let sent = requests[ctx.imds_requests..].iter().filter(|r| {
        r.headers
            .iter()
            .any(|(n, v)| n == "x-injected" || v.contains("not a token"))
    });
    assert_eq!(sent.count(), 0, "the bad session token was sent");
}

/// Nothing but the logins (and the warm-up's health checks, without a token) was sent: no
/// secret read, no revoke with a bogus token.
fn nothing_but_logins_was_sent(ctx: &Ctx, _: &Outcome) {
    let after: Vec<_> = ctx.env.vault.control().requests()[ctx.vault_requests..]
        .iter()
        .filter(|r| !(r.path == "/v1/sys/health" && r.header("x-vault-token").is_none()))
        .map(|r| r.path.clone())
        .collect();
    assert!(after.iter().all(|p| p == LOGIN), "{after:?}");
}

/// The error names the field (or metadata item) and the value, escaped; no line anywhere was
/// forged: stderr's lines are all vaultboot's own, syslog's messages one line each.
fn names_the_field_and_forges_no_line(_: &Ctx, out: &Outcome) {
    let fields = [
        "instanceId",
        "region",
        "accountId",
        "availabilityZone",
        "imageId",
        "privateIp",
        "local-hostname",
        "local-ipv4",
    ];
    let named = out.stderr.lines().any(|l| {
        l.starts_with("vaultboot: error: IMDS /latest/")
            && fields.iter().any(|f| l.contains(&format!(": {f} \"")))
            && l.contains("\" is not ")
    });
    assert!(named, "no error naming the field: {}", out.stderr);
    assert!(
        out.stderr.lines().all(|l| l.starts_with("vaultboot: ")),
        "a line that is not vaultboot's: {}",
        out.stderr
    );
    assert!(!out.stderr.contains(['\x1b', '\x07']), "{}", out.stderr);
    for message in &out.syslog {
        assert!(!message.contains(char::is_control), "syslog: {message:?}");
    }
}

fn one_bounded_line_without_escapes(_: &Ctx, out: &Outcome) {
    assert!(!out.stderr.contains('\x1b'), "{}", out.stderr);
    assert!(!out.stderr.contains('\r'));
    assert!(
        out.stderr.lines().all(|l| l.len() < 2000),
        "a line of {} bytes",
        out.stderr.lines().map(str::len).max().unwrap_or(0)
    );
    assert!(
        !out.stderr.lines().any(|l| l.starts_with("vaultboot: done")),
        "a forged log line: {}",
        out.stderr
    );
}

// ------------------------------------------------------------------------------------------
// Vault's TLS: a whole other server

/// A Vault simulator serving a certificate that must not be accepted; the good run before
/// used the right one.
fn tls_refused(make: impl FnOnce(&VaultOptions) -> (String, String)) {
    let env = Env::new();
    let (_, before) = prepared(&env);
    let mut opts = VaultOptions::new(&env.signer);
    opts.server_cert = Some(make(&opts));
    let bad = VaultSim::start(opts).unwrap();
    bad.add_ec2_role("aws", "web", None, &["secret/"]);
    std::fs::write(env.path("bad-ca.pem"), bad.ca_pem()).unwrap();
    // A deadline far beyond the bound below: refused at once passes on any machine, retried
    // until the deadline fails.
    let cfg = env.write(
        &config(&env)
            .set("retry", "deadline", "60s")
            .set(
                "vault",
                "address",
                format!("https://localhost:{}", bad.addr().port()),
            )
            .set("vault", "ca_cert", &env.path("bad-ca.pem")),
    );
    let out = refused(&env, &cfg, &before, 69);
    assert!(out.stderr.contains("TLS"), "{}", out.stderr);
    assert!(
        out.elapsed < Duration::from_secs(30),
        "not retried: {:?}",
        out.elapsed
    );
    assert_eq!(bad.logins(), 0);
    assert!(bad.control().requests().is_empty(), "a request got through");
}

#[test]
fn vault_certificate_for_another_name_is_refused() {
    tls_refused(|o| o.ca.issue_server_cert(&["vault.elsewhere.example"], &[]));
}

#[test]
fn vault_certificate_for_an_ip_is_not_valid_for_a_name() {
    tls_refused(|o| o.ca.issue_server_cert(&[], &["127.0.0.1".parse().unwrap()]));
}

#[test]
fn vault_expired_certificate_is_refused() {
    tls_refused(|o| {
        o.ca.issue_expired_server_cert(&["localhost"], &["127.0.0.1".parse().unwrap()])
    });
}

#[test]
fn vault_tls_server_name_that_does_not_match_is_refused() {
    let env = Env::new();
    let (_, before) = prepared(&env);
    let cfg = env.write(&config(&env).set("vault", "tls_server_name", "vault.wrong.example"));
    let out = refused(&env, &cfg, &before, 69);
    assert!(out.stderr.contains("TLS"), "{}", out.stderr);
}

// ------------------------------------------------------------------------------------------
// A server that answers one byte every 100 ms, forever (plain HTTP, or TLS with a certificate
// for localhost from `ca`). Returns its port; it lives until the test process ends.

fn trickle_server(ca: Option<&TestCa>) -> u16 {
    let tls = ca.map(|ca| {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (cert, key) = ca.issue_server_cert(&["localhost"], &["127.0.0.1".parse().unwrap()]);
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
        )
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let tls = tls.clone();
            std::thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
                match tls {
                    None => trickle(tcp),
                    Some(cfg) => {
                        let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                            return;
                        };
                        trickle(rustls::StreamOwned::new(conn, tcp));
                    }
                }
            });
        }
    });
    port
}

fn trickle(mut s: impl Read + Write) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let answer =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{";
    if s.write_all(answer).and_then(|_| s.flush()).is_err() {
        return;
    }
    for _ in 0..6000 {
        if s.write_all(b" ").and_then(|_| s.flush()).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
