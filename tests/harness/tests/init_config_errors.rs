//! bottle-init refuses bad input with a clear error and the configuration-error exit
//! code (196), and starts nothing.
#![allow(clippy::disallowed_methods)] // drives the bottle-init binary; no reaper in this process

use bottle_tests::external::{TempDir, bottle_init, command, output};

fn run_with(config: Option<&str>, extra_env: &[(&str, &str)]) -> (i32, String, bool) {
    let dir = TempDir::new("cfg");
    let marker = dir.join("started");
    let path = dir.join("init.toml");
    let mut cmd = command(bottle_init());
    cmd.arg("--control-socket").arg(dir.join("ctl.sock"));
    if let Some(text) = config {
        std::fs::write(&path, text.replace("MARKER", marker.to_str().unwrap())).unwrap();
        cmd.arg("--config").arg(&path);
    } else {
        cmd.arg("--config").arg(dir.join("missing.toml"));
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = output(&mut cmd);
    std::thread::sleep(std::time::Duration::from_millis(50));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        marker.exists(),
    )
}

/// A daemon that would leave a marker file if anything were started.
const STARTER: &str = "[[daemon]]\nname = \"starter\"\ncommand = [\"/bin/touch\", \"MARKER\"]\nrestart = \"temporary\"\n";

#[test]
fn each_bad_config_is_a_clear_error_with_code_196_and_nothing_started() {
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "cannot read config"),
        (Some(format!("{STARTER}this is = = not toml")), "not valid TOML"),
        (
            Some(format!("grace_secs = 3\n{STARTER}")),
            "unknown key `grace_secs`; did you mean `grace_seconds`?",
        ),
        (
            Some(format!("{STARTER}stop_timout = 3\n")),
            "unknown key `daemon[0].stop_timout`; did you mean `stop_timeout`?",
        ),
        (
            Some(format!(
                "{STARTER}[[daemon]]\nname = \"egress\"\n[daemon.builtin.egress]\nroutes = \"/r.yaml\"\nlistn = 1\n"
            )),
            "unknown key `daemon[1].builtin.egress.listn`; did you mean `listen`?",
        ),
        (Some(format!("{STARTER}{STARTER}")), "duplicate daemon name \"starter\""),
        (
            Some(format!("{STARTER}[[daemon]]\nname = \"egress\"\n[daemon.builtin.egres]\n")),
            "`daemon[1].builtin` is not one of `egress`, `git-gate`, `supervise`; did you mean `egress`?",
        ),
        (
            Some(format!("{STARTER}[[daemon]]\nname = \"empty\"\ncommand = []\n")),
            "`daemon[1].command`: is empty: nothing to execute",
        ),
        (
            Some(format!(
                "{STARTER}[[daemon]]\nname = \"x\"\ncommand = [\"y\"]\npass_env = [\"NOT_SET_ANYWHERE\"]\n"
            )),
            "\"NOT_SET_ANYWHERE\"",
        ),
    ];
    for (config, needle) in cases {
        let (code, stderr, started) = run_with(config.as_deref(), &[]);
        assert_eq!(code, 196, "{needle}: stderr {stderr}");
        assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
        assert!(stderr.contains("nothing was started"), "{stderr}");
        assert!(!started, "{needle}: a daemon was started");
    }
}

#[test]
fn an_unknown_name_in_bottle_sidecar_daemons_is_a_config_error() {
    let (code, stderr, started) =
        run_with(Some(STARTER), &[("BOTTLE_SIDECAR_DAEMONS", "starter,nope")]);
    assert_eq!(code, 196, "{stderr}");
    assert!(stderr.contains("\"nope\""), "{stderr}");
    assert!(!started);
}

#[test]
fn a_secret_named_in_pass_env_never_appears_in_an_error() {
    // The error comes from the same daemon, after its environment was resolved.
    let config = format!(
        "{STARTER}[[daemon]]\nname = \"x\"\ncommand = [\"y\"]\npass_env = [\"EGRESS_TOKEN_0\"]\nready = {{ tcp = \"bad\" }}\n"
    );
    let (code, stderr, _) = run_with(Some(&config), &[("EGRESS_TOKEN_0", "sk-very-secret-value")]);
    assert_eq!(code, 196);
    assert!(stderr.contains("not an address"), "{stderr}");
    assert!(!stderr.contains("sk-very-secret-value"), "{stderr}");
}

#[test]
fn secrets_from_an_fd_that_is_not_open_or_not_json_are_config_errors_that_quote_nothing() {
    let config = format!("secrets = {{ fd = 57 }}\n{STARTER}");
    let (code, stderr, started) = run_with(Some(&config), &[]);
    assert_eq!(code, 196, "{stderr}");
    assert!(stderr.contains("`secrets`: cannot take the inherited fd 57"), "{stderr}");
    assert!(!started);

    // A pipe left open (not close-on-exec) for bottle-init, holding something that is
    // not a JSON map of strings.
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let (reader, mut writer) = std::io::pipe().unwrap();
    writer.write_all(br#"{"TOKEN": ["sk-very-secret-value"]}"#).unwrap();
    drop(writer);
    nix::fcntl::fcntl(&reader, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty())).unwrap();
    let config = format!("secrets = {{ fd = {} }}\n{STARTER}", reader.as_raw_fd());
    let (code, stderr, started) = run_with(Some(&config), &[]);
    assert_eq!(code, 196, "{stderr}");
    assert!(stderr.contains("is not a JSON object of name -> string"), "{stderr}");
    assert!(!stderr.contains("sk-very-secret-value"), "{stderr}");
    assert!(!started);
}

#[test]
fn secrets_from_an_inherited_fd_are_read_and_the_daemons_start() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let (reader, mut writer) = std::io::pipe().unwrap();
    writer.write_all(br#"{"TOKEN": "sk-very-secret-value"}"#).unwrap();
    drop(writer);
    nix::fcntl::fcntl(&reader, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty())).unwrap();
    let config = format!(
        "secrets = {{ fd = {} }}\n[[daemon]]\nname = \"job\"\ncommand = [\"/bin/touch\", \"MARKER\"]\nrestart = \"temporary\"\nsignificant = true\n",
        reader.as_raw_fd()
    );
    let (code, stderr, started) = run_with(Some(&config), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(started, "{stderr}");
    assert!(!stderr.contains("sk-very-secret-value"), "{stderr}");
}

#[test]
fn no_program_and_no_config_is_a_usage_error() {
    let out = output(&mut command(bottle_init()));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Nothing to run"));
}
