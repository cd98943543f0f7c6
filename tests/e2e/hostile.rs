//! Hostile input built at run time: refused quickly with a clear diagnostic, never a crash.

use vexil_core::{Code, CompileOptions, source};

fn codes(dir: &std::path::Path) -> Vec<(String, Code)> {
    let (_, compiled) = vexil_core::load_dir(dir, &CompileOptions::default()).unwrap();
    assert!(
        compiled.snapshot.is_none(),
        "hostile input produced a snapshot"
    );
    compiled
        .diagnostics
        .iter()
        .map(|d| (d.file.clone(), d.code))
        .collect()
}

#[test]
fn oversized_binary_and_non_utf8_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let big = format!("flags:\n{}", "  # padding comment line\n".repeat(50_000));
    std::fs::write(dir.path().join("big.yaml"), big).unwrap();
    std::fs::write(dir.path().join("binary.yaml"), b"flags:\n  a: {}\x00\x01").unwrap();
    std::fs::write(dir.path().join("latin1.yaml"), b"flags:\n  caf\xe9: {}\n").unwrap();
    std::fs::write(dir.path().join("ok.yaml"), "flags:\n  fine: {}\n").unwrap();
    let got = codes(dir.path());
    assert_eq!(
        got,
        vec![
            ("big.yaml".into(), Code::FileTooLarge),
            ("binary.yaml".into(), Code::BinaryFile),
            ("latin1.yaml".into(), Code::NotUtf8),
        ]
    );
    let loaded = source::from_memory([("x.yaml", b"a: \xff".to_vec())]);
    let d = &loaded.diagnostics[0];
    assert_eq!((d.code, d.pos.line, d.pos.column), (Code::NotUtf8, 1, 4));
}

#[cfg(unix)]
#[test]
fn symlinks_leading_outside_the_root_are_refused_but_inside_ones_work() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.yaml"), "flags:\n  stolen: {}\n").unwrap();
    let root = tempfile::tempdir().unwrap();
    // A Kubernetes ConfigMap mount: files are links into a hidden, atomically swapped directory.
    std::fs::create_dir(root.path().join("..2026_11_21_05_00_00.1")).unwrap();
    std::fs::write(
        root.path().join("..2026_11_21_05_00_00.1/a.yaml"),
        "flags:\n  a: {}\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_11_21_05_00_00.1", root.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/a.yaml", root.path().join("a.yaml")).unwrap();
    let (loaded, compiled) = vexil_core::load_dir(root.path(), &CompileOptions::default()).unwrap();
    assert_eq!(
        loaded
            .files
            .iter()
            .map(|f| f.path.as_str())
            .collect::<Vec<_>>(),
        vec!["a.yaml"]
    );
    assert!(
        compiled.diagnostics.is_empty(),
        "{:?}",
        compiled.diagnostics
    );
    assert!(
        compiled
            .snapshot
            .unwrap()
            .namespace("default")
            .and_then(|n| n.flag("a"))
            .is_some()
    );

    std::os::unix::fs::symlink(
        outside.path().join("secret.yaml"),
        root.path().join("leak.yaml"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("leakdir")).unwrap();
    let got = codes(root.path());
    assert_eq!(
        got,
        vec![
            ("leak.yaml".into(), Code::SymlinkOutsideRoot),
            ("leakdir".into(), Code::SymlinkOutsideRoot)
        ]
    );
}

#[cfg(unix)]
#[test]
fn a_pipe_named_like_a_flag_file_is_refused_not_read() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("ok.yaml"), "flags:\n  fine: {}\n").unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(root.path().join("pipe.yaml"))
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo failed");
    // Opening the pipe for reading would block forever; the walk must skip it with a diagnostic.
    assert_eq!(codes(root.path()), vec![("pipe.yaml".into(), Code::Io)]);
}

#[test]
fn alias_bombs_and_deep_nesting_are_refused_quickly() {
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in names.windows(2) {
        let refs = vec![format!("*{}", pair[0]); 9].join(",");
        bomb.push_str(&format!("{}: &{} [{refs}]\n", pair[1], pair[1]));
    }
    let deep = format!("flags:\n  x: {}{}\n", "[".repeat(5_000), "]".repeat(5_000));
    let loaded = source::from_memory([("bomb.yaml", bomb), ("deep.yaml", deep)]);
    let compiled = vexil_core::compile(&loaded.files, &CompileOptions::default());
    let got: Vec<_> = compiled
        .diagnostics
        .iter()
        .map(|d| (d.file.as_str(), d.code))
        .collect();
    assert_eq!(
        got,
        vec![
            ("bomb.yaml", Code::YamlLimit),
            ("deep.yaml", Code::YamlLimit)
        ]
    );
}
