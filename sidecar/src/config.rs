//! Reading the `bottle-init` configuration file and validating it into a supervision spec.
//!
//! Hazard: a typo in a sidecar config must not start a half-configured sidecar, and an
//! error must never print a secret. The schema is `bottle_protocol::init` (an unknown
//! key is an error naming its path with the closest valid key, derived from the types);
//! here every reference (`pass_env`, `usr1_restarts`, `BOTTLE_SIDECAR_DAEMONS`,
//! builtins) is resolved before anything starts, and errors name keys and variables,
//! never their values.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bottle_protocol::ProtocolError;
pub(crate) use bottle_protocol::init::InitConfig;
use bottle_protocol::init::{DaemonConfig, ReadyConfig};
use bottle_protocol::secrets::Secrets;
use bottle_runtime::backoff::Backoff;
use bottle_runtime::spec::{ChildSpec, ChildStart, ProcessSpec, Readiness, SupervisorSpec};

use crate::builtin;

/// Default control socket.
pub(crate) const DEFAULT_CONTROL_SOCKET: &str = "/run/bottle-init/control.sock";

/// Why a configuration was refused. Nothing is started when one is returned.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigFileError {
    #[error("cannot read config {path:?}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path:?}: {error}")]
    Schema { path: PathBuf, error: ProtocolError },
    #[error("`{location}`: {problem}")]
    Invalid { location: String, problem: String },
    #[error("invalid supervision spec")]
    Spec(#[from] bottle_runtime::spec::ConfigError),
}

type Result<T> = std::result::Result<T, ConfigFileError>;

fn invalid(location: impl Into<String>, problem: impl Into<String>) -> ConfigFileError {
    ConfigFileError::Invalid { location: location.into(), problem: problem.into() }
}

/// Never the value: it may be a secret, and the key path says which one is wrong.
fn seconds(value: f64, location: &str, allow_zero: bool) -> Result<Duration> {
    if !value.is_finite() || value < 0.0 || (!allow_zero && value == 0.0) {
        let bound = if allow_zero { ">= 0" } else { "> 0" };
        return Err(invalid(location, format!("must be {bound} seconds")));
    }
    Duration::try_from_secs_f64(value).map_err(|_| invalid(location, "is out of range"))
}

/// bottle-init's reading and validation of its configuration.
pub(crate) trait InitConfigFile: Sized {
    /// Reads and parses `path`, checking every key.
    fn load(path: &Path) -> Result<Self>;
    /// Parses `text` (read from `path`).
    fn parse(text: &str, path: &Path) -> Result<Self>;
    /// Grace budget from the first SIGTERM to exit.
    fn grace(&self) -> Result<Duration>;
    /// Builds the supervision tree, resolving `pass_env` from `environ`, handing the
    /// builtins `secrets` and narrowing the daemon set to `only` (BOTTLE_SIDECAR_DAEMONS).
    fn to_spec(
        &self,
        environ: &BTreeMap<String, OsString>,
        only: Option<&str>,
        secrets: &Secrets,
    ) -> Result<SupervisorSpec>;
}

impl InitConfigFile for InitConfig {
    fn load(path: &Path) -> Result<InitConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigFileError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<InitConfig> {
        InitConfig::from_toml(text)
            .map_err(|error| ConfigFileError::Schema { path: path.to_path_buf(), error })
    }

    fn grace(&self) -> Result<Duration> {
        seconds(self.grace_seconds, "grace_seconds", false)
    }

    fn to_spec(
        &self,
        environ: &BTreeMap<String, OsString>,
        only: Option<&str>,
        secrets: &Secrets,
    ) -> Result<SupervisorSpec> {
        self.grace()?;
        let names: Vec<&str> = self.daemon.iter().map(|d| d.name.as_str()).collect();
        let mut seen = HashSet::new();
        for (i, name) in names.iter().enumerate() {
            if !seen.insert(*name) {
                return Err(invalid(
                    format!("daemon[{i}].name"),
                    format!("duplicate daemon name {name:?}"),
                ));
            }
        }
        for (i, name) in self.usr1_restarts.iter().enumerate() {
            if !names.contains(&name.as_str()) {
                return Err(invalid(
                    format!("usr1_restarts[{i}]"),
                    format!("no daemon named {name:?}"),
                ));
            }
        }
        let selected: Option<Vec<&str>> = match only {
            Some(list) if !list.trim().is_empty() => {
                let wanted: Vec<&str> =
                    list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
                for name in &wanted {
                    if !names.contains(name) {
                        return Err(invalid(
                            "BOTTLE_SIDECAR_DAEMONS",
                            format!("no daemon named {name:?} (configured: {})", names.join(", ")),
                        ));
                    }
                }
                Some(wanted)
            }
            _ => None,
        };
        let mut spec = SupervisorSpec::new("init").strategy(self.strategy);
        if let Some(intensity) = &self.intensity {
            let period = seconds(intensity.period_seconds, "intensity.period_seconds", false)?;
            spec = spec.intensity(intensity.max_restarts, period);
        } else {
            // A sidecar daemon that crashes a few times should not take the bottle down:
            // 5 restarts in 30 s before the root gives up (OTP's 1 in 5 s is for trees
            // whose parents restart them).
            spec = spec.intensity(5, Duration::from_secs(30));
        }
        for (i, daemon) in self.daemon.iter().enumerate() {
            if selected.as_ref().is_some_and(|s| !s.contains(&daemon.name.as_str())) {
                continue;
            }
            spec = spec.child(to_child(daemon, &format!("daemon[{i}]"), environ, secrets)?);
        }
        spec.validate()?;
        Ok(spec)
    }
}

/// A daemon's reload signal.
pub(crate) trait DaemonReload {
    /// The signal sent to this daemon's process group on reload, if any.
    fn reload_signal(&self) -> Result<Option<i32>>;
}

impl DaemonReload for DaemonConfig {
    fn reload_signal(&self) -> Result<Option<i32>> {
        reload_signal_at(self, &format!("daemon {:?}", self.name))
    }
}

fn reload_signal_at(daemon: &DaemonConfig, location: &str) -> Result<Option<i32>> {
    match &daemon.reload_signal {
        None => Ok(None),
        Some(name) => bottle_runtime::proc::signal::parse(name).map(Some).ok_or_else(|| {
            invalid(format!("{location}.reload_signal"), "is not a signal name (like HUP, USR2)")
        }),
    }
}

fn to_child(
    daemon: &DaemonConfig,
    location: &str,
    environ: &BTreeMap<String, OsString>,
    secrets: &Secrets,
) -> Result<ChildSpec> {
    reload_signal_at(daemon, location)?;
    let start = match (&daemon.command, &daemon.builtin) {
        (Some(_), Some(_)) => {
            return Err(invalid(location, "set either command or builtin, not both"));
        }
        (None, None) => return Err(invalid(location, "set command (an argv list) or builtin")),
        (None, Some(settings)) => {
            if !daemon.env.is_empty() || !daemon.pass_env.is_empty() || daemon.ready.is_some() {
                return Err(invalid(
                    location,
                    "env, pass_env and ready apply to command daemons only",
                ));
            }
            let at = format!("{location}.builtin.{}", settings.name());
            let factory = builtin::create(&daemon.name, settings, secrets)
                .map_err(|problem| invalid(at, problem))?;
            ChildStart::Actor(factory)
        }
        (Some(argv), None) => {
            if argv.is_empty() || argv[0].is_empty() {
                return Err(invalid(format!("{location}.command"), "is empty: nothing to execute"));
            }
            ChildStart::Process(ProcessSpec {
                argv: argv.iter().map(OsString::from).collect(),
                env: process_env(daemon, location, environ)?,
                cwd: daemon.cwd.clone(),
                readiness: readiness(daemon.ready.as_ref(), &format!("{location}.ready"))?,
            })
        }
    };
    let mut backoff = Backoff::default();
    if let Some(b) = &daemon.backoff {
        if let Some(v) = b.initial {
            backoff.initial = seconds(v, &format!("{location}.backoff.initial"), true)?;
        }
        if let Some(v) = b.factor {
            backoff.factor = v;
        }
        if let Some(v) = b.cap {
            backoff.cap = seconds(v, &format!("{location}.backoff.cap"), true)?;
        }
        if let Some(v) = b.jitter {
            backoff.jitter = v;
        }
    }
    let mut child = ChildSpec::new(&daemon.name, start)
        .restart(daemon.restart)
        .significant(daemon.significant)
        .stop_timeout(seconds(daemon.stop_timeout, &format!("{location}.stop_timeout"), false)?)
        .backoff(backoff)
        .reset_after(seconds(daemon.reset_after, &format!("{location}.reset_after"), true)?);
    child.permanent_exit_codes = daemon.permanent_exit_codes.clone();
    Ok(child)
}

/// A command daemon's whole environment: `env`, then `pass_env` from ours, then a
/// default `PATH`.
fn process_env(
    daemon: &DaemonConfig,
    location: &str,
    environ: &BTreeMap<String, OsString>,
) -> Result<Vec<(OsString, OsString)>> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    for (k, v) in &daemon.env {
        env.push((k.into(), v.into()));
    }
    for (i, name) in daemon.pass_env.iter().enumerate() {
        // Never the value: only the name goes into an error.
        let value = environ.get(name).ok_or_else(|| {
            invalid(
                format!("{location}.pass_env[{i}]"),
                format!("names {name:?}, which is not set in bottle-init's environment"),
            )
        })?;
        env.push((name.into(), value.clone()));
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push((
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ));
    }
    Ok(env)
}

fn readiness(ready: Option<&ReadyConfig>, location: &str) -> Result<Readiness> {
    let Some(ready) = ready else { return Ok(Readiness::None) };
    let deadline = seconds(ready.deadline, &format!("{location}.deadline"), false)?;
    let kinds = usize::from(ready.tcp.is_some())
        + usize::from(ready.unix.is_some())
        + usize::from(ready.notify_fd.is_some())
        + usize::from(ready.sd_notify == Some(true));
    if kinds != 1 {
        return Err(invalid(location, "set exactly one of tcp, unix, notify_fd, sd_notify = true"));
    }
    if let Some(addr) = &ready.tcp {
        let addr: SocketAddr = addr.parse().map_err(|_| {
            invalid(format!("{location}.tcp"), "is not an address like 127.0.0.1:9099")
        })?;
        return Ok(Readiness::Tcp { addr, deadline });
    }
    if let Some(path) = &ready.unix {
        return Ok(Readiness::Unix { path: path.clone(), deadline });
    }
    if let Some(fd) = ready.notify_fd {
        return Ok(Readiness::NotifyFd { fd, deadline });
    }
    Ok(Readiness::SdNotify { deadline })
}

#[cfg(test)]
mod tests {
    use bottle_protocol::egress::{EgressSettings, Listen};
    use bottle_protocol::init::Builtin;
    use bottle_runtime::policy::{RestartType, Strategy};

    use super::*;

    fn parse(text: &str) -> Result<InitConfig> {
        InitConfig::parse(text, Path::new("test.toml"))
    }

    fn spec(text: &str) -> Result<SupervisorSpec> {
        let env: BTreeMap<String, OsString> =
            [("TOKEN".to_string(), OsString::from("s3cr3t"))].into();
        parse(text)?.to_spec(&env, None, &Secrets::new())
    }

    #[test]
    fn unknown_keys_are_named_by_path_with_a_suggestion() {
        let err = parse("grace_secs = 3\n").unwrap_err().to_string();
        assert_eq!(
            err,
            "config \"test.toml\": unknown key `grace_secs`; did you mean `grace_seconds`?"
        );
        let err = parse("[[daemon]]\nname = \"a\"\ncomand = [\"x\"]\n").unwrap_err().to_string();
        assert!(err.ends_with("unknown key `daemon[0].comand`; did you mean `command`?"), "{err}");
    }

    #[test]
    fn broken_configs_are_refused_with_a_reason() {
        for (text, needle) in [
            ("[[daemon]]\nname = \"a\"\ncommand = []\n", "`daemon[0].command`: is empty"),
            (
                "[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\n[[daemon]]\nname = \"a\"\ncommand = [\"y\"]\n",
                "`daemon[1].name`: duplicate daemon name \"a\"",
            ),
            (
                "[[daemon]]\nname = \"a\"\n[daemon.builtin.nope]\n",
                "`daemon[0].builtin` is not one of `egress`, `git-gate`, `supervise`",
            ),
            (
                "[[daemon]]\nname = \"a\"\n[daemon.builtin.git-gate.repos.\"..\"]\nurl = \"https://example.com/r.git\"\n",
                "`daemon[0].builtin.git-gate`: git-gate repository \"..\": the name must match [A-Za-z0-9._-]+",
            ),
            (
                "[[daemon]]\nname = \"a\"\n[daemon.builtin.git-gate.repos.r]\nurl = \"ssh://git@example.com/r.git\"\nidentity = \"/k\"\n",
                "`daemon[0].builtin.git-gate`: git-gate repository \"r\": an ssh upstream needs `host_key` pinned",
            ),
            (
                "[[daemon]]\nname = \"a\"\n[daemon.builtin.git-gate]\nroot = \"/g\"\nlisten = { port = 1 }\n",
                "`daemon[0].builtin.git-gate.listen`",
            ),
            ("[[daemon]]\nname = \"a\"\n[daemon.builtin.egress]\n", "missing key `routes`"),
            (
                "[[daemon]]\nname = \"a\"\n[daemon.builtin.egress]\nroutes = \"/r.yaml\"\nlisten = \"x\"\n",
                "`daemon[0].builtin.egress.listen`",
            ),
            ("[[daemon]]\nname = \"a\"\n", "`daemon[0]`: set command"),
            (
                "[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\nstop_timeout = 0\n",
                "`daemon[0].stop_timeout`: must be > 0 seconds",
            ),
            (
                "[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\npass_env = [\"MISSING\"]\n",
                "`daemon[0].pass_env[0]`: names \"MISSING\"",
            ),
            (
                "usr1_restarts = [\"b\"]\n[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\n",
                "`usr1_restarts[0]`: no daemon named \"b\"",
            ),
            (
                "[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\nready = { tcp = \"x\" }\n",
                "`daemon[0].ready.tcp`: is not an address",
            ),
            (
                "[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\nready = { deadline = 3 }\n",
                "`daemon[0].ready`: set exactly one",
            ),
            (
                "[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\nreload_signal = \"NOPE\"\n",
                "`daemon[0].reload_signal`: is not a signal",
            ),
            (
                "intensity = { max_restarts = 0, period_seconds = 0 }\n",
                "`intensity.period_seconds`: must be > 0",
            ),
            (
                "[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\nrestart = \"sometimes\"\n",
                "`daemon[0].restart` is not one of `permanent`, `transient`, `temporary`",
            ),
            ("grace_seconds = -1\n", "`grace_seconds`: must be > 0"),
            ("this is not toml", "not valid TOML"),
        ] {
            let err = spec(text).map(|_| ()).unwrap_err();
            let chain = crate::chain(&err);
            assert!(chain.contains(needle), "{text:?}: {chain}");
        }
    }

    #[test]
    fn no_config_error_quotes_a_value() {
        let secret = "sk-live-secret-value";
        for text in [
            format!(
                "[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\nenv = {{ TOKEN = \"{secret}\" \n"
            ),
            format!("[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\nstop_timeout = \"{secret}\"\n"),
            format!(
                "[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\nready = {{ tcp = \"{secret}\" }}\n"
            ),
            format!("[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\nreload_signal = \"{secret}\"\n"),
            format!("[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\nrestart = \"{secret}\"\n"),
        ] {
            let err = crate::chain(&spec(&text).map(|_| ()).unwrap_err());
            assert!(!err.contains(secret), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_toml_error_never_quotes_the_offending_line() {
        let text = "[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\nenv = { TOKEN = \"sk-live-secret-value\" \n";
        let err = parse(text).unwrap_err().to_string();
        assert!(!err.contains("sk-live-secret-value"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        let typed = "[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\nstop_timeout = \"sk-live-secret-value\"\n";
        let err = parse(typed).unwrap_err().to_string();
        assert!(!err.contains("sk-live-secret-value"), "{err}");
    }

    #[test]
    fn secrets_reach_only_the_daemon_that_lists_them_and_never_an_error() {
        let text = "[[daemon]]\nname = \"egress\"\ncommand = [\"x\"]\npass_env = [\"TOKEN\"]\n[[daemon]]\nname = \"other\"\ncommand = [\"y\"]\n";
        let spec = spec(text).unwrap();
        let env_of = |i: usize| match &spec.children[i].start {
            ChildStart::Process(p) => p.env.clone(),
            _ => unreachable!("process"),
        };
        assert!(env_of(0).contains(&("TOKEN".into(), "s3cr3t".into())));
        assert!(!env_of(1).iter().any(|(k, v)| k == "TOKEN" || v == "s3cr3t"));
        let empty = BTreeMap::new();
        let err =
            parse(text).unwrap().to_spec(&empty, None, &Secrets::new()).unwrap_err().to_string();
        assert!(err.contains("TOKEN") && !err.contains("s3cr3t"), "{err}");
    }

    #[test]
    fn the_daemon_set_can_be_narrowed_and_an_unknown_name_is_refused() {
        let text = "[[daemon]]\nname = \"a\"\ncommand = [\"x\"]\n[[daemon]]\nname = \"b\"\ncommand = [\"y\"]\n[[daemon]]\nname = \"c\"\ncommand = [\"z\"]\n";
        let env = BTreeMap::new();
        let config = parse(text).unwrap();
        let spec = config.to_spec(&env, Some("c,a"), &Secrets::new()).unwrap();
        let names: Vec<_> = spec.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["a", "c"], "config order is kept");
        let err = config.to_spec(&env, Some("a,zz"), &Secrets::new()).unwrap_err().to_string();
        assert!(err.contains("\"zz\""), "{err}");
    }

    #[test]
    fn a_rendered_config_is_accepted_unchanged() {
        let mut egress = EgressSettings::new("/etc/bottle/routes.yaml");
        egress.listen = Listen::Addr("127.0.0.1:0".parse().unwrap());
        let config = InitConfig {
            daemon: vec![
                DaemonConfig::builtin("egress", Builtin::Egress(egress)),
                DaemonConfig::command("web", vec!["/bin/web".into()]),
            ],
            ..InitConfig::default()
        };
        let text = config.to_toml().unwrap();
        let read = parse(&text).unwrap();
        assert_eq!(read, config);
        let spec = read.to_spec(&BTreeMap::new(), None, &Secrets::new()).unwrap();
        assert!(matches!(spec.children[0].start, ChildStart::Actor(_)));
        assert!(matches!(spec.children[1].start, ChildStart::Process(_)));
    }

    #[test]
    fn a_full_daemon_entry_maps_onto_the_spec() {
        let text = r#"
            grace_seconds = 6.5
            strategy = "rest_for_one"
            intensity = { max_restarts = 3, period_seconds = 20 }
            [[daemon]]
            name = "web"
            command = ["/bin/web", "--port", "80"]
            restart = "transient"
            env = { MODE = "x" }
            significant = true
            stop_timeout = 2.5
            permanent_exit_codes = [78, 64]
            reset_after = 30
            ready = { tcp = "127.0.0.1:80", deadline = 4 }
            backoff = { initial = 0.5, factor = 3.0, cap = 10, jitter = 0.0 }
        "#;
        let spec = spec(text).unwrap();
        assert_eq!(spec.strategy, Strategy::RestForOne);
        assert_eq!(spec.intensity.max_restarts, 3);
        let web = &spec.children[0];
        assert_eq!(web.restart, RestartType::Transient);
        assert!(web.significant);
        assert_eq!(web.stop_timeout, Duration::from_millis(2500));
        assert_eq!(web.permanent_exit_codes, vec![78, 64]);
        assert_eq!(web.backoff.initial, Duration::from_millis(500));
        assert_eq!(web.backoff.factor, 3.0);
        match &web.start {
            ChildStart::Process(p) => {
                assert_eq!(
                    p.readiness,
                    Readiness::Tcp {
                        addr: "127.0.0.1:80".parse().unwrap(),
                        deadline: Duration::from_secs(4)
                    }
                );
                assert!(p.env.contains(&("MODE".into(), "x".into())));
                assert!(p.env.iter().any(|(k, _)| k == "PATH"));
            }
            _ => panic!("process expected"),
        }
    }
}
