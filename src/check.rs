//! What `vaultboot check` says about a valid configuration beyond "valid": warnings about
//! output directories that others can search, and (`--print-outputs`) every output path, for
//! an image build that must scrub them (packer/cleanup.sh).

use crate::config::{Config, FileConfig, SecretConfig};
use crate::template::{Fact, Facts};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// One warning per output whose immediate directory exists and can be searched by others
/// (`o+x`): anyone can then `stat` the secret file (its size, its times) even though its own
/// mode keeps them from reading it. A directory that does not exist yet is created 0700 by
/// `run`; a directory with a template in it is known only at run time.
pub fn warnings<A>(config: &Config<A>) -> Vec<String> {
    let mut out = Vec::new();
    for (secret, file) in outputs(config) {
        let Some(dir) = Path::new(&file.path_text).parent() else {
            continue;
        };
        if dir.to_string_lossy().contains("{{") {
            continue;
        }
        // Following symlinks: what matters is the directory the file ends up in.
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() && mode & 0o001 != 0 {
            out.push(format!(
                "[[secret]] {:?} file {:?}: its directory {} (mode {mode:04o}) can be searched by \
                 others, who can see the file's size and times; keep secrets in a directory \
                 others cannot search (0700, or 0710/0750 with the group of the service that \
                 reads them)",
                secret.name,
                file.path_text,
                dir.display()
            ));
        }
    }
    out
}

/// Every output path, one per entry, in configuration order. A templated part (`{{ name }}`)
/// is printed as a shell glob of what AWS gives for it (see `fact_glob`), so that a script can
/// find the files a run wrote on this machine. A path whose own text holds a glob character
/// or a control character cannot be printed unambiguously: the error names it.
pub fn output_globs<A>(config: &Config<A>) -> Result<Vec<String>, String> {
    let mut globs = Facts::default();
    let mut empty = Facts::default();
    for fact in Fact::ALL {
        globs.set(fact, fact_glob(fact).to_string());
        empty.set(fact, String::new());
    }
    let mut out = Vec::new();
    for (secret, file) in outputs(config) {
        // Validated at load time: every name of the template is a known fact.
        let literal = file.path.render(&empty).unwrap_or_default();
        if let Some(c) = literal
            .chars()
            .find(|c| matches!(c, '*' | '?' | '[' | ']' | '\\') || c.is_control())
        {
            return Err(format!(
                "[[secret]] {:?} file {:?}: cannot be printed as a shell glob: it holds {c:?}",
                secret.name, file.path_text
            ));
        }
        out.push(file.path.render(&globs).unwrap_or_default());
    }
    Ok(out)
}

/// The shell glob that a fact's value matches, as narrow as a glob can say its AWS format, so
/// that a cleanup removes a run's file and not a neighbour: `i-*` for an instance id, 12
/// digits for an account, `[0-9]*.[0-9]*.[0-9]*.[0-9]*` for an IPv4 address, … EC2 host
/// names are `ip-<address>.<domain>` or `i-<id>.<domain>`. `private-ip` is an IPv4 address,
/// or the IPv6 address on an IPv6-only instance: a glob matches both.
fn fact_glob(fact: Fact) -> &'static str {
    match fact {
        Fact::InstanceId => "i-*",
        Fact::ImageId => "ami-*",
        Fact::AccountId => "[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]",
        Fact::Region => "[a-z][a-z]-*-[0-9]",
        Fact::AvailabilityZone => "[a-z][a-z]-*-[0-9]*[a-z]",
        Fact::LocalIpv4 => "[0-9]*.[0-9]*.[0-9]*.[0-9]*",
        Fact::PrivateIp => "[0-9a-f:]*[.:]*",
        Fact::Ipv6 => "[0-9a-f:]*:*",
        Fact::LocalHostname => "i*-*",
    }
}

fn outputs<A>(config: &Config<A>) -> impl Iterator<Item = (&SecretConfig<A>, &FileConfig<A>)> {
    config
        .secrets
        .iter()
        .flat_map(|s| s.files.iter().map(move |f| (s, f)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(paths: &[&str]) -> Config<crate::config::Names> {
        let mut text = String::from(
            "[vault]\naddress = \"https://v:8200\"\n[auth]\nrole = \"r\"\n\
             [[secret]]\nname = \"s\"\npath = \"kv/s\"\n",
        );
        for p in paths {
            text.push_str(&format!(
                "[[secret.file]]\npath = {p:?}\nfields = [\"f\"]\nowner = \"0\"\ngroup = \"0\"\n"
            ));
        }
        crate::config::parse(&text, Path::new("t.toml")).unwrap()
    }

    /// fnmatch(3) for the forms `fact_glob` uses: `*` (not across `/`), `[a-z]`, literals.
    fn glob_match(glob: &[u8], name: &[u8]) -> bool {
        match glob.split_first() {
            None => name.is_empty(),
            Some((b'*', rest)) => (0..=name.len())
                .take_while(|&i| i == 0 || name[i - 1] != b'/')
                .any(|i| glob_match(rest, &name[i..])),
            Some((b'[', rest)) => {
                let end = rest.iter().position(|&c| c == b']').unwrap();
                let class = &rest[..end];
                let hit = name.first().is_some_and(|&c| class_has(class, c));
                hit && glob_match(&rest[end + 1..], &name[1..])
            }
            Some((&c, rest)) => name.first() == Some(&c) && glob_match(rest, &name[1..]),
        }
    }

    /// A bracket class of ranges (`a-z`) and single characters (`:`), in any order.
    fn class_has(class: &[u8], c: u8) -> bool {
        match class {
            [from, b'-', to, rest @ ..] => (*from..=*to).contains(&c) || class_has(rest, c),
            [one, rest @ ..] => *one == c || class_has(rest, c),
            [] => false,
        }
    }

    #[test]
    fn templated_parts_become_globs_of_their_aws_format() {
        let c = config(&[
            "/etc/a/{{ instance-id }}.pem",
            "/etc/{{ region }}/{{ availability-zone }}-{{ account-id }}",
            "/etc/b/{{ local-hostname }}.{{ local-ipv4 }}.{{ image-id }}",
            "/etc/plain/file name",
        ]);
        let globs = output_globs(&c).unwrap();
        let m = |i: usize, name: &str| glob_match(globs[i].as_bytes(), name.as_bytes());
        assert_eq!(globs[0], "/etc/a/i-*.pem");
        assert!(m(0, "/etc/a/i-0123456789abcdef0.pem"));
        assert!(!m(0, "/etc/a/default.pem"));
        assert!(m(1, "/etc/us-gov-west-1/us-gov-west-1a-123456789012"));
        assert!(m(1, "/etc/eu-west-1/eu-west-1b-000000000000"));
        assert!(!m(1, "/etc/eu-west-1/eu-west-1b-12345678901"));
        assert!(!m(1, "/etc/default/default-123456789012"));
        assert!(m(2, "/etc/b/ip-10-0-1-23.ec2.internal.10.0.1.23.ami-0abc"));
        assert!(m(
            2,
            "/etc/b/i-0abc.eu-west-1.compute.internal.10.0.1.23.ami-0abc"
        ));
        assert!(!m(2, "/etc/b/nginx.conf"));
        assert_eq!(globs[3], "/etc/plain/file name");
    }

    /// On an IPv6-only instance `private-ip` is the IPv6 address; `ipv6` always is one.
    #[test]
    fn ip_facts_glob_their_ipv6_values_too() {
        let c = config(&["/etc/p/{{ private-ip }}.pem", "/etc/6/{{ ipv6 }}.pem"]);
        let globs = output_globs(&c).unwrap();
        let m = |i: usize, name: &str| glob_match(globs[i].as_bytes(), name.as_bytes());
        assert!(m(0, "/etc/p/10.0.1.23.pem"));
        assert!(m(0, "/etc/p/2600:1f18:5cb5:3200::67a4.pem"));
        assert!(m(1, "/etc/6/2600:1f18:5cb5:3200::67a4.pem"));
        assert!(m(1, "/etc/6/::1.pem"));
        for other in ["/etc/p/default.pem", "/etc/p/x/1.2.pem", "/etc/p/.pem"] {
            assert!(!m(0, other), "{other}");
        }
        for other in ["/etc/6/10.0.1.23.pem", "/etc/6/default.pem"] {
            assert!(!m(1, other), "{other}");
        }
    }

    #[test]
    fn a_glob_or_control_character_in_the_text_is_refused() {
        for bad in [
            "/etc/a/*.pem",
            "/etc/a/x?",
            "/etc/a/[x]",
            "/etc/a/x\\y",
            "/etc/a/x\ny",
        ] {
            let c = config(&[bad]);
            let e = output_globs(&c).unwrap_err();
            assert!(
                e.contains("cannot be printed") && e.contains("\"s\""),
                "{bad:?}: {e}"
            );
        }
    }
}
