use super::*;
use std::os::unix::fs::PermissionsExt;

fn output(path: PathBuf, content: &str) -> Output {
    let me = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    Output {
        path,
        secret: "test".into(),
        holds_certificate: false,
        content: Secret::from_string(content.into()),
        mode: 0o640,
        uid: me,
        gid,
        on_change: None,
        credential: None,
        sealed: None,
    }
}

fn private_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o700)).unwrap();
    d
}

#[test]
fn writes_then_leaves_unchanged_files_alone() {
    let d = private_dir();
    let outs = vec![
        output(d.path().join("a"), "one"),
        output(d.path().join("sub/b"), "two"),
    ];
    let done = stage_all(&outs).unwrap().commit().unwrap();
    assert!(done.iter().all(|(_, o)| *o == Outcome::Written));
    let meta = fs::metadata(d.path().join("a")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!(fs::read_to_string(d.path().join("sub/b")).unwrap(), "two");
    assert_eq!(
        fs::metadata(d.path().join("sub")).unwrap().mode() & 0o777,
        0o700
    );

    let done = stage_all(&outs).unwrap().commit().unwrap();
    assert!(done.iter().all(|(_, o)| *o == Outcome::Unchanged));
    let again = fs::metadata(d.path().join("a")).unwrap();
    assert_eq!(
        (meta.ino(), meta.mtime_nsec()),
        (again.ino(), again.mtime_nsec())
    );
}

#[test]
fn a_failure_leaves_old_files_whole_and_no_stage_behind() {
    let d = private_dir();
    fs::write(d.path().join("a"), "old").unwrap();
    fs::create_dir(d.path().join("b")).unwrap();
    let outs = vec![
        output(d.path().join("a"), "new"),
        output(d.path().join("b"), "x"),
    ];
    let e = stage_all(&outs).err().unwrap();
    assert!(e.message.contains("directory"), "{e}");
    assert_eq!(fs::read_to_string(d.path().join("a")).unwrap(), "old");
    let names: Vec<_> = fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn a_symlink_is_replaced_not_followed() {
    let d = private_dir();
    let victim = d.path().join("victim");
    fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, d.path().join("out")).unwrap();
    let outs = vec![output(d.path().join("out"), "secret")];
    stage_all(&outs).unwrap().commit().unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    assert!(fs::symlink_metadata(d.path().join("out"))
        .unwrap()
        .is_file());
}

#[test]
fn world_writable_parent_is_refused() {
    let d = private_dir();
    let open = d.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let outs = vec![output(open.join("x"), "s")];
    let e = stage_all(&outs).err().unwrap();
    assert!(e.message.contains("writable by others"), "{e}");
    assert!(!open.join("x").exists());
}

#[test]
fn a_sticky_world_writable_parent_is_refused_but_tolerated_above() {
    let d = private_dir();
    let sticky = d.path().join("sticky");
    fs::create_dir(&sticky).unwrap();
    fs::set_permissions(&sticky, fs::Permissions::from_mode(0o1777)).unwrap();
    // As the last directory: others may create what they like in it (a name it will use).
    let outs = vec![output(sticky.join("x"), "s")];
    let e = stage_all(&outs).err().unwrap();
    assert!(e.message.contains("writable by others (mode 1777)"), "{e}");
    assert!(!sticky.join("x").exists());
    // Above it (as /tmp is): what is ours there cannot be renamed by others.
    let ours = sticky.join("ours");
    fs::create_dir(&ours).unwrap();
    fs::set_permissions(&ours, fs::Permissions::from_mode(0o700)).unwrap();
    let outs = vec![output(ours.join("x"), "s")];
    stage_all(&outs).unwrap().commit().unwrap();
    assert_eq!(fs::read_to_string(ours.join("x")).unwrap(), "s");
}

/// A real fault between staging and renaming: the target became a non-empty directory
/// (rename(2) then fails with EISDIR). What was renamed before stays, the rest is old, the
/// error says which is which, and no staged file is left.
#[test]
fn a_rename_that_fails_part_way_says_what_was_replaced() {
    let d = private_dir();
    for name in ["a", "b", "c", "same"] {
        fs::write(d.path().join(name), "old").unwrap();
        fs::set_permissions(d.path().join(name), fs::Permissions::from_mode(0o640)).unwrap();
    }
    let outs = vec![
        output(d.path().join("a"), "new"),
        output(d.path().join("b"), "new"),
        output(d.path().join("same"), "old"),
        output(d.path().join("c"), "new"),
    ];
    let staged = stage_all(&outs).unwrap();
    let replacing: Vec<_> = staged.to_replace().map(|o| o.path.clone()).collect();
    assert_eq!(replacing.len(), 3, "{replacing:?}");
    fs::remove_file(d.path().join("b")).unwrap();
    fs::create_dir(d.path().join("b")).unwrap();
    fs::write(d.path().join("b/inside"), "x").unwrap();

    let e = staged.commit().err().unwrap();
    assert_eq!(e.replaced, vec![d.path().join("a")]);
    assert_eq!(e.not_replaced, vec![d.path().join("b"), d.path().join("c")]);
    assert_eq!(e.error.path, d.path().join("b"));
    let text = e.to_string();
    assert!(text.contains("cannot rename into place"), "{text}");
    assert!(
        text.contains(&format!(
            "already replaced: {}",
            d.path().join("a").display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "not replaced (as they were): {}, {}",
            d.path().join("b").display(),
            d.path().join("c").display()
        )),
        "{text}"
    );
    assert_eq!(fs::read_to_string(d.path().join("a")).unwrap(), "new");
    assert_eq!(fs::read_to_string(d.path().join("c")).unwrap(), "old");
    let staged_left: Vec<_> = fs::read_dir(d.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(STAGE_MARK))
        .collect();
    assert!(staged_left.is_empty(), "{staged_left:?}");
}

#[test]
fn stale_stages_are_cleaned() {
    let d = private_dir();
    let stale = d.path().join(".a.vaultboot.deadbeef");
    fs::write(&stale, "half").unwrap();
    let outs = vec![output(d.path().join("a"), "new")];
    stage_all(&outs).unwrap().commit().unwrap();
    assert!(!stale.exists());
}
