//! Owner and group names, read from `/etc/passwd` and `/etc/group` only.
//!
//! The binary is static (musl): there is no NSS, so LDAP/SSSD users are not seen, and musl's
//! own lookups would also ask an nscd socket when one exists. Reading the two files ourselves
//! makes the rule exact and the same on every image: a name resolves when it is a line of the
//! file (as `useradd` and cloud-init's `users:` write them); a number is always taken as the id.

use crate::untrusted;
use std::path::Path;

const PASSWD: &str = "/etc/passwd";
const GROUP: &str = "/etc/group";
/// Far above any real account database; a larger file is refused rather than read whole.
const MAX_BYTES: u64 = 8 << 20;

/// The uid of `name`: a decimal number as is, else the `/etc/passwd` entry.
pub fn user_id(name: &str) -> Result<u32, String> {
    resolve(name, Path::new(PASSWD), "user")
}

/// The gid of `name`: a decimal number as is, else the `/etc/group` entry.
pub fn group_id(name: &str) -> Result<u32, String> {
    resolve(name, Path::new(GROUP), "group")
}

/// `(uid_t)-1` and `(gid_t)-1`: chown(2) reads them as "leave unchanged", so a file "owned"
/// by this id would keep whatever owner it had (and never look current).
const NO_CHANGE: u32 = u32::MAX;

fn resolve(name: &str, file: &Path, what: &str) -> Result<u32, String> {
    let id = lookup(name, file, what)?;
    if id == NO_CHANGE {
        return Err(format!(
            "{name:?} is id {NO_CHANGE}, which chown(2) takes as \"no change\": not a {what}"
        ));
    }
    Ok(id)
}

fn lookup(name: &str, file: &Path, what: &str) -> Result<u32, String> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    let text = read_capped(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    match id_in(&text, name) {
        Some(Ok(id)) => Ok(id),
        Some(Err(())) => Err(format!(
            "the {what} {name:?} in {} has no valid numeric id",
            file.display()
        )),
        None => Err(format!(
            "no {what} {name:?} in {} (a static binary sees only local accounts; a numeric id always works)",
            file.display()
        )),
    }
}

fn read_capped(file: &Path) -> Result<String, String> {
    let file = std::fs::File::open(file).map_err(|e| e.to_string())?;
    let bytes = untrusted::read_capped(file, MAX_BYTES).map_err(|e| match e {
        untrusted::ReadError::Io(e) => e.to_string(),
        too_large => too_large.to_string(),
    })?;
    String::from_utf8(bytes.to_vec()).map_err(|_| "not UTF-8".to_string())
}

/// The third field of the first line whose first field is `name`. Both files share that shape
/// (`name:password:id:...`). NIS compat lines (`+`, `-`) and comments are not accounts.
fn id_in(text: &str, name: &str) -> Option<Result<u32, ()>> {
    text.lines()
        .filter(|line| !line.starts_with(['+', '-', '#']))
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next() == Some(name)).then(|| {
                fields
                    .nth(1)
                    .and_then(|id| id.parse::<u32>().ok())
                    .ok_or(())
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD_TEXT: &str = "root:x:0:0:root:/root:/bin/bash\n\
        +nisuser::::::\n\
        # comment:x:7:7\n\
        www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n\
        svc-web:x:1001:1001::/home/svc-web:/bin/sh\n\
        broken:x:notanumber:1::/:/bin/sh\n";

    #[test]
    fn finds_names_by_their_first_field_only() {
        assert_eq!(id_in(PASSWD_TEXT, "svc-web"), Some(Ok(1001)));
        assert_eq!(id_in(PASSWD_TEXT, "www-data"), Some(Ok(33)));
        assert_eq!(id_in(PASSWD_TEXT, "root"), Some(Ok(0)));
        // a name that appears only as a home directory or gecos is not a user
        assert_eq!(id_in(PASSWD_TEXT, "svc"), None);
        assert_eq!(id_in(PASSWD_TEXT, "/root"), None);
        assert_eq!(id_in(PASSWD_TEXT, "nisuser"), None);
        assert_eq!(id_in(PASSWD_TEXT, "+nisuser"), None);
        assert_eq!(id_in(PASSWD_TEXT, "comment"), None);
        assert_eq!(id_in(PASSWD_TEXT, "broken"), Some(Err(())));
    }

    #[test]
    fn group_lines_have_the_same_shape() {
        let group = "root:x:0:\nadm:x:4:syslog,alice\nsvc-web:x:1001:\n";
        assert_eq!(id_in(group, "adm"), Some(Ok(4)));
        assert_eq!(id_in(group, "svc-web"), Some(Ok(1001)));
        assert_eq!(id_in(group, "alice"), None);
    }

    #[test]
    fn numbers_need_no_file() {
        let missing = Path::new("/nonexistent/passwd");
        assert_eq!(resolve("4242", missing, "user"), Ok(4242));
        let e = resolve("svc-web", missing, "user").unwrap_err();
        assert!(e.contains("cannot read /nonexistent/passwd"), "{e}");
    }

    #[test]
    fn the_no_change_id_is_refused_as_a_number_or_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("passwd");
        std::fs::write(&file, "odd:x:4294967295:1::/:/bin/sh\n").unwrap();
        for name in ["4294967295", "odd"] {
            let e = resolve(name, &file, "user").unwrap_err();
            assert!(e.contains("\"no change\""), "{e}");
        }
        assert_eq!(resolve("4294967294", &file, "user"), Ok(4294967294));
    }

    #[test]
    fn reads_a_real_file_and_names_it_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("passwd");
        std::fs::write(&file, PASSWD_TEXT).unwrap();
        assert_eq!(resolve("svc-web", &file, "user"), Ok(1001));
        let e = resolve("nobody-here", &file, "user").unwrap_err();
        assert!(e.starts_with("no user \"nobody-here\" in "), "{e}");
        assert!(e.contains("numeric id always works"), "{e}");
        let e = resolve("broken", &file, "user").unwrap_err();
        assert!(e.contains("no valid numeric id"), "{e}");
    }
}
